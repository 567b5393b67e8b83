"""The project's vocabulary, torch-free and pandas-free: what a variant is, what a cell's records
hold, what an endpoint names, and what every run, stage and cell is called.

Every rule that asks "what kind of normalization is this?" reads `pipeline.spec.variants`; every
reader of a cell's records gets the typed models of `pipeline.spec.records`; a verdict's endpoints
are `pipeline.spec.endpoints.Endpoint` (fields first, display text derived); names are built by
`pipeline.spec.names`. Import from the submodules.
"""
