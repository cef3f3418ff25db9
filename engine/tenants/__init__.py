"""Organizations, their API keys, secrets and quotas: what makes the engine a service.

Tenant rows carry their organization, and PostgreSQL's row-level security (sql/004)
keeps one organization from another's: this package holds the pieces the CLI and the API
share, and never decides on its own who may see what.
"""
