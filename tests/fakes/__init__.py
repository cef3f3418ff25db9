"""In-process fakes of the services the engine talks to (webhook endpoints, ...)."""
