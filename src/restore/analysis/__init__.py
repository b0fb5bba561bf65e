"""The feature-shift diagnostics: per-layer shift profiles of trained methods and the paper's figures."""
