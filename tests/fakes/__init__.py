"""In-process fakes of external services (model providers) for tests."""
