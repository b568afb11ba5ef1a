"""Target providers (one subpackage per target), found by the core through entry points only."""
