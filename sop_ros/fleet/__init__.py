"""Fleet description -> node specs; pip-only launcher."""
