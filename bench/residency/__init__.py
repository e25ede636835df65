"""The residency audit's parts: the deployment and users (model), the matrix of cells
(matrix), the listing of every region's data (inventory). Entry point: bench.residency_audit."""
