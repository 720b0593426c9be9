"""A cluster on one machine: N ``trioshop run`` nodes on one PostgreSQL database behind HAProxy."""
