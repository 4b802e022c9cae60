"""Storage backends: memory, sqlite, redis (and fakeredis), postgres; the registry."""
