"""The language-model palliatives: a tiny decoder-only transformer, SDFT on it, the distillation
pieces, the RL's Razor toy, and memory by context vs by weights (with its cost)."""
