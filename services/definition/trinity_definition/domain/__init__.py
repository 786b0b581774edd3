"""The DefinitionVersion aggregate: pure domain code (standard library and shared kernel only)."""
