"""Test package (named so that same-named test files in different folders import)."""
