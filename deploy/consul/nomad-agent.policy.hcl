# Consul ACL policy of the Nomad agents (the token in their
# `consul { token = ... }` block). Nomad registers the model tasks'
# services, serai-<endpoint>, with it: this is the model tasks' policy.
# docs/security.md, "Consul ACLs", says why each rule is here.

# Nomad fingerprints its local Consul agent (consul.version and friends;
# a node without them places no job that has a Consul service).
agent_prefix "" {
  policy = "read"
}

node_prefix "" {
  policy = "read"
}

# Nomad's own services.
service "nomad" {
  policy = "write"
}

service "nomad-client" {
  policy = "write"
}

# The model tasks' services, serai-<endpoint>...
service_prefix "serai-" {
  policy = "write"
}

# ...but not serai's own: an exact rule wins over a prefix, so no Nomad
# job can register as a router or a server. (The deploy/ jobs do not
# register those through Nomad; the processes register themselves.)
service "serai-router" {
  policy = "read"
}

service "serai-server" {
  policy = "read"
}
