# Consul ACL policy of `serai router` (its token goes in CONSUL_HTTP_TOKEN).
# docs/security.md, "Consul ACLs", says why each rule is here.

# Routing tables: read only; the server is their only writer.
key_prefix "serai/routes/" {
  policy = "read"
}

# Wake keys of variants scaled to zero: the only key a router writes.
key_prefix "serai/wake/" {
  policy = "write"
}

# Endpoints' instances and their health.
service_prefix "serai-" {
  policy = "read"
}

# Its own registration (--register) and check.
service "serai-router" {
  policy = "write"
}

# Health answers leave out entries on nodes the token cannot read, and
# the shared health watch reads the nodes' own checks.
node_prefix "" {
  policy = "read"
}
