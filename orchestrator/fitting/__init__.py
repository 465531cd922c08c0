"""From runs to a scaling law with uncertainty: the law, Approaches 1-3, bootstrap, residual model, diagnostics."""
