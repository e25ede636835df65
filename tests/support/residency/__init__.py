"""The residency audit's parts: the deployment and users (`model`), the matrix of cells
(`matrix`), the listing of every region's data (`inventory`), and `run`, which runs them
against a target. `make residency-audit` (bench/residency_audit.py) records the result;
tests/statemachines/test_residency_matrix.py asserts it."""
