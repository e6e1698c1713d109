"""A single-module pack that raises while importing."""
raise RuntimeError("boom at import of raises_at_import")
