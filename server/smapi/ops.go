package smapi

// Requests and answers of the Describe, Delete, List and tag operations.

// DescribeModelInput is DescribeModel's request.
type DescribeModelInput struct {
	ModelName string `json:"ModelName"`
}

// DeleteModelInput is DeleteModel's request (its answer is empty).
type DeleteModelInput struct {
	ModelName string `json:"ModelName"`
}

// DescribeEndpointConfigInput is DescribeEndpointConfig's request.
type DescribeEndpointConfigInput struct {
	EndpointConfigName string `json:"EndpointConfigName"`
}

// DeleteEndpointConfigInput is DeleteEndpointConfig's request.
type DeleteEndpointConfigInput struct {
	EndpointConfigName string `json:"EndpointConfigName"`
}

// DescribeEndpointInput is DescribeEndpoint's request.
type DescribeEndpointInput struct {
	EndpointName string `json:"EndpointName"`
}

// DeleteEndpointInput is DeleteEndpoint's request.
type DeleteEndpointInput struct {
	EndpointName string `json:"EndpointName"`
}

// UpdateEndpointWeightsAndCapacitiesOutput is that operation's answer.
type UpdateEndpointWeightsAndCapacitiesOutput struct {
	EndpointArn string `json:"EndpointArn"`
}

// Sort keys and orders of the List operations.
const (
	SortByName          = "Name"
	SortByCreationTime  = "CreationTime"
	SortByStatus        = "Status" // ListEndpoints only
	SortOrderAscending  = "Ascending"
	SortOrderDescending = "Descending"
)

// SageMaker's limits on the List and tag operations.
const (
	DefaultListMaxResults = 10  // List*: MaxResults when absent
	MaxListMaxResults     = 100 // List*: MaxResults 1..100
	MinTagsMaxResults     = 50  // ListTags: MaxResults at least 50 (and its default)
	MaxTagsPerResource    = 50
	MaxTagKeyLength       = 128
	MaxTagValueLength     = 256
	MaxNextTokenLength    = 8192
)

// ListModelsInput is ListModels' request.
type ListModelsInput struct {
	SortBy             string `json:"SortBy,omitempty"`
	SortOrder          string `json:"SortOrder,omitempty"`
	NextToken          string `json:"NextToken,omitempty"`
	MaxResults         *int   `json:"MaxResults,omitempty"`
	NameContains       string `json:"NameContains,omitempty"`
	CreationTimeBefore *Time  `json:"CreationTimeBefore,omitempty"`
	CreationTimeAfter  *Time  `json:"CreationTimeAfter,omitempty"`
}

// ListModelsOutput is ListModels' answer.
type ListModelsOutput struct {
	Models    []ModelSummary `json:"Models"`
	NextToken string         `json:"NextToken,omitempty"`
}

// ListEndpointConfigsInput is ListEndpointConfigs' request.
type ListEndpointConfigsInput struct {
	SortBy             string `json:"SortBy,omitempty"`
	SortOrder          string `json:"SortOrder,omitempty"`
	NextToken          string `json:"NextToken,omitempty"`
	MaxResults         *int   `json:"MaxResults,omitempty"`
	NameContains       string `json:"NameContains,omitempty"`
	CreationTimeBefore *Time  `json:"CreationTimeBefore,omitempty"`
	CreationTimeAfter  *Time  `json:"CreationTimeAfter,omitempty"`
}

// ListEndpointConfigsOutput is ListEndpointConfigs' answer.
type ListEndpointConfigsOutput struct {
	EndpointConfigs []EndpointConfigSummary `json:"EndpointConfigs"`
	NextToken       string                  `json:"NextToken,omitempty"`
}

// ListEndpointsInput is ListEndpoints' request.
type ListEndpointsInput struct {
	SortBy                 string `json:"SortBy,omitempty"`
	SortOrder              string `json:"SortOrder,omitempty"`
	NextToken              string `json:"NextToken,omitempty"`
	MaxResults             *int   `json:"MaxResults,omitempty"`
	NameContains           string `json:"NameContains,omitempty"`
	CreationTimeBefore     *Time  `json:"CreationTimeBefore,omitempty"`
	CreationTimeAfter      *Time  `json:"CreationTimeAfter,omitempty"`
	LastModifiedTimeBefore *Time  `json:"LastModifiedTimeBefore,omitempty"`
	LastModifiedTimeAfter  *Time  `json:"LastModifiedTimeAfter,omitempty"`
	StatusEquals           string `json:"StatusEquals,omitempty"`
}

// ListEndpointsOutput is ListEndpoints' answer.
type ListEndpointsOutput struct {
	Endpoints []EndpointSummary `json:"Endpoints"`
	NextToken string            `json:"NextToken,omitempty"`
}

// AddTagsInput is AddTags' request.
type AddTagsInput struct {
	ResourceArn string `json:"ResourceArn"`
	Tags        []Tag  `json:"Tags"`
}

// AddTagsOutput is AddTags' answer: the tags added.
type AddTagsOutput struct {
	Tags []Tag `json:"Tags"`
}

// ListTagsInput is ListTags' request.
type ListTagsInput struct {
	ResourceArn string `json:"ResourceArn"`
	NextToken   string `json:"NextToken,omitempty"`
	MaxResults  *int   `json:"MaxResults,omitempty"`
}

// ListTagsOutput is ListTags' answer.
type ListTagsOutput struct {
	Tags      []Tag  `json:"Tags"`
	NextToken string `json:"NextToken,omitempty"`
}

// DeleteTagsInput is DeleteTags' request (its answer is empty).
type DeleteTagsInput struct {
	ResourceArn string   `json:"ResourceArn"`
	TagKeys     []string `json:"TagKeys"`
}

// Error codes serai answers with, as SageMaker's JSON protocol spells
// them (the "__type" member and the X-Amzn-ErrorType header).
const (
	ErrValidation          = "ValidationException"
	ErrResourceInUse       = "ResourceInUse"
	ErrResourceNotFound    = "ResourceNotFound"
	ErrResourceLimit       = "ResourceLimitExceeded"
	ErrSerialization       = "SerializationException"
	ErrUnknownOperation    = "UnknownOperationException"
	ErrServiceUnavailable  = "ServiceUnavailable"
	ErrInternalFailure     = "InternalFailure"
	ErrRequestTooLarge     = "RequestEntityTooLargeException"
	ErrMissingAuthToken    = "MissingAuthenticationTokenException"
	ErrIncompleteSignature = "IncompleteSignatureException"
	ErrUnrecognizedClient  = "UnrecognizedClientException"
	ErrInvalidSignature    = "InvalidSignatureException"
	// ErrAccessDenied: an authenticated caller asked for an operation or
	// a resource its key does not allow (an operator operation, say).
	ErrAccessDenied = "AccessDeniedException"
)

// Error is the body of every error answer.
type Error struct {
	Type    string `json:"__type"`
	Message string `json:"message"`
}
