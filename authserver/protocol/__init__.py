"""The OAuth protocol edge: Authlib grants and HTTP endpoints, thin over the domain."""
