# Consul ACL policy of `serai server` (its token goes in CONSUL_HTTP_TOKEN).
# docs/security.md, "Consul ACLs", says why each rule is here.

# Records, routing tables, the leader lock and wake keys: the server is
# the only writer of everything under serai/ (routers write wake keys too).
key_prefix "serai/" {
  policy = "write"
}

# The leader session is created on the local agent's node, whatever its
# name.
session_prefix "" {
  policy = "write"
}

# Its own registration and the TTL check the leader session depends on.
service "serai-server" {
  policy = "write"
}

# Health of the endpoints' instances (deployment health) and of the
# routers it scrapes for auto-rollback.
service_prefix "serai-" {
  policy = "read"
}

# Health answers leave out entries on nodes the token cannot read.
node_prefix "" {
  policy = "read"
}
