package contract

// Consul KV layout of the control plane. The server is the only writer of
// every key below serai/; routers read only RoutesKeyPrefix.
const (
	// KVPrefix is the root of everything serai keeps in Consul KV.
	KVPrefix = "serai/"
	// ModelsPrefix holds one JSON record per model.
	ModelsPrefix = KVPrefix + "models/"
	// EndpointConfigsPrefix holds one JSON record per endpoint config.
	EndpointConfigsPrefix = KVPrefix + "endpoint-configs/"
	// EndpointsPrefix holds one JSON record per endpoint.
	EndpointsPrefix = KVPrefix + "endpoints/"
	// StoresPrefix holds one JSON record per artifact store. Only an
	// operator writes them (Serai.PutArtifactStore or serai server
	// --stores); models and data capture name a store, never define one.
	StoresPrefix = KVPrefix + "stores/"
	// LeaderKey is the Consul lock the reconciling server holds.
	LeaderKey = KVPrefix + "leader"
)
