"""Running experiments: profiles (paper / smoke), the runner (seeds, parallel runs, the run cache)
and the pipeline behind `make reproduce` and the notebook tests."""
