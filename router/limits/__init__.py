"""Per-client quotas, daily spend caps and concurrency limits, counted in the database so that
several router processes agree (see README "Auth, quotas and spend caps")."""
