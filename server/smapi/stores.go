package smapi

// Serai's own operator operations (X-Amz-Target: Serai.<Operation>), which
// SageMaker has no counterpart for. Artifact stores are operator-owned:
// only a caller signing with an operator key (or the loopback caller of a
// server without authentication) may put or delete one; models and data
// capture name a store and never define it.

// OperatorTargetPrefix starts the X-Amz-Target of the operator operations.
const OperatorTargetPrefix = "Serai."

// PutArtifactStoreInput creates or replaces an artifact store.
type PutArtifactStoreInput struct {
	ArtifactStore ArtifactStore `json:"ArtifactStore"`
	// AllowedPrincipals are the SigV4 access key IDs that may name the
	// store in CreateModel / CreateEndpointConfig; "*" is any
	// authenticated caller. Empty: only operators.
	AllowedPrincipals []string `json:"AllowedPrincipals,omitempty"`
}

// PutArtifactStoreOutput is PutArtifactStore's answer.
type PutArtifactStoreOutput struct {
	// Created is false when a store of that name was replaced.
	Created bool `json:"Created"`
}

// DescribeArtifactStoreInput names one store.
type DescribeArtifactStoreInput struct {
	Name string `json:"Name"`
}

// DescribeArtifactStoreOutput is one store as the operator defined it.
type DescribeArtifactStoreOutput struct {
	ArtifactStore     ArtifactStore `json:"ArtifactStore"`
	AllowedPrincipals []string      `json:"AllowedPrincipals,omitempty"`
	CreationTime      Time          `json:"CreationTime"`
}

// ListArtifactStoresInput lists stores (no paging: stores are few).
type ListArtifactStoresInput struct{}

// ListArtifactStoresOutput lists the stores the caller may name (all of
// them for an operator).
type ListArtifactStoresOutput struct {
	ArtifactStores []DescribeArtifactStoreOutput `json:"ArtifactStores"`
}

// DeleteArtifactStoreInput names the store to delete.
type DeleteArtifactStoreInput struct {
	Name string `json:"Name"`
}
