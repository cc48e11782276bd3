"""Human-facing output: terminal tables, figures and HTML reports."""
