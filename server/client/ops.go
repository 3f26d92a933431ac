package client

import (
	"context"

	"github.com/seraihq/serai/server/smapi"
)

// One method per operation, named as the operation.

func (c *Client) CreateModel(ctx context.Context, in *smapi.CreateModelInput) (*smapi.CreateModelOutput, error) {
	var out smapi.CreateModelOutput
	return &out, c.Call(ctx, "CreateModel", in, &out, false)
}

func (c *Client) DescribeModel(ctx context.Context, in *smapi.DescribeModelInput) (*smapi.DescribeModelOutput, error) {
	var out smapi.DescribeModelOutput
	return &out, c.Call(ctx, "DescribeModel", in, &out, true)
}

func (c *Client) ListModels(ctx context.Context, in *smapi.ListModelsInput) (*smapi.ListModelsOutput, error) {
	var out smapi.ListModelsOutput
	return &out, c.Call(ctx, "ListModels", in, &out, true)
}

func (c *Client) DeleteModel(ctx context.Context, in *smapi.DeleteModelInput) error {
	return c.Call(ctx, "DeleteModel", in, nil, false)
}

func (c *Client) CreateEndpointConfig(ctx context.Context, in *smapi.CreateEndpointConfigInput) (*smapi.CreateEndpointConfigOutput, error) {
	var out smapi.CreateEndpointConfigOutput
	return &out, c.Call(ctx, "CreateEndpointConfig", in, &out, false)
}

func (c *Client) DescribeEndpointConfig(ctx context.Context, in *smapi.DescribeEndpointConfigInput) (*smapi.DescribeEndpointConfigOutput, error) {
	var out smapi.DescribeEndpointConfigOutput
	return &out, c.Call(ctx, "DescribeEndpointConfig", in, &out, true)
}

func (c *Client) ListEndpointConfigs(ctx context.Context, in *smapi.ListEndpointConfigsInput) (*smapi.ListEndpointConfigsOutput, error) {
	var out smapi.ListEndpointConfigsOutput
	return &out, c.Call(ctx, "ListEndpointConfigs", in, &out, true)
}

func (c *Client) DeleteEndpointConfig(ctx context.Context, in *smapi.DeleteEndpointConfigInput) error {
	return c.Call(ctx, "DeleteEndpointConfig", in, nil, false)
}

func (c *Client) CreateEndpoint(ctx context.Context, in *smapi.CreateEndpointInput) (*smapi.CreateEndpointOutput, error) {
	var out smapi.CreateEndpointOutput
	return &out, c.Call(ctx, "CreateEndpoint", in, &out, false)
}

func (c *Client) DescribeEndpoint(ctx context.Context, in *smapi.DescribeEndpointInput) (*smapi.DescribeEndpointOutput, error) {
	var out smapi.DescribeEndpointOutput
	return &out, c.Call(ctx, "DescribeEndpoint", in, &out, true)
}

func (c *Client) ListEndpoints(ctx context.Context, in *smapi.ListEndpointsInput) (*smapi.ListEndpointsOutput, error) {
	var out smapi.ListEndpointsOutput
	return &out, c.Call(ctx, "ListEndpoints", in, &out, true)
}

func (c *Client) UpdateEndpoint(ctx context.Context, in *smapi.UpdateEndpointInput) (*smapi.UpdateEndpointOutput, error) {
	var out smapi.UpdateEndpointOutput
	return &out, c.Call(ctx, "UpdateEndpoint", in, &out, false)
}

func (c *Client) UpdateEndpointWeightsAndCapacities(ctx context.Context, in *smapi.UpdateEndpointWeightsAndCapacitiesInput) (*smapi.UpdateEndpointWeightsAndCapacitiesOutput, error) {
	var out smapi.UpdateEndpointWeightsAndCapacitiesOutput
	return &out, c.Call(ctx, "UpdateEndpointWeightsAndCapacities", in, &out, false)
}

func (c *Client) DeleteEndpoint(ctx context.Context, in *smapi.DeleteEndpointInput) error {
	return c.Call(ctx, "DeleteEndpoint", in, nil, false)
}

func (c *Client) AddTags(ctx context.Context, in *smapi.AddTagsInput) (*smapi.AddTagsOutput, error) {
	var out smapi.AddTagsOutput
	return &out, c.Call(ctx, "AddTags", in, &out, false)
}

func (c *Client) ListTags(ctx context.Context, in *smapi.ListTagsInput) (*smapi.ListTagsOutput, error) {
	var out smapi.ListTagsOutput
	return &out, c.Call(ctx, "ListTags", in, &out, true)
}

func (c *Client) DeleteTags(ctx context.Context, in *smapi.DeleteTagsInput) error {
	return c.Call(ctx, "DeleteTags", in, nil, false)
}

// serai's operator operations (X-Amz-Target: Serai.<Operation>).

// operatorOps are the operations sent under smapi.OperatorTargetPrefix.
var operatorOps = map[string]bool{
	"PutArtifactStore": true, "DescribeArtifactStore": true, "ListArtifactStores": true, "DeleteArtifactStore": true,
}

func (c *Client) PutArtifactStore(ctx context.Context, in *smapi.PutArtifactStoreInput) (*smapi.PutArtifactStoreOutput, error) {
	var out smapi.PutArtifactStoreOutput
	return &out, c.Call(ctx, "PutArtifactStore", in, &out, false)
}

func (c *Client) DescribeArtifactStore(ctx context.Context, in *smapi.DescribeArtifactStoreInput) (*smapi.DescribeArtifactStoreOutput, error) {
	var out smapi.DescribeArtifactStoreOutput
	return &out, c.Call(ctx, "DescribeArtifactStore", in, &out, true)
}

func (c *Client) ListArtifactStores(ctx context.Context, in *smapi.ListArtifactStoresInput) (*smapi.ListArtifactStoresOutput, error) {
	var out smapi.ListArtifactStoresOutput
	return &out, c.Call(ctx, "ListArtifactStores", in, &out, true)
}

func (c *Client) DeleteArtifactStore(ctx context.Context, in *smapi.DeleteArtifactStoreInput) error {
	return c.Call(ctx, "DeleteArtifactStore", in, nil, false)
}
