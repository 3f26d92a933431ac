package api

import (
	"strings"

	"github.com/seraihq/serai/internal/names"
	"github.com/seraihq/serai/server/records"
)

// Resource types in ARNs, as SageMaker writes them.
const (
	arnModel          = "model"
	arnEndpointConfig = "endpoint-config"
	arnEndpoint       = "endpoint"
)

var kindOfARNType = map[string]records.Kind{
	arnModel:          records.KindModel,
	arnEndpointConfig: records.KindEndpointConfig,
	arnEndpoint:       records.KindEndpoint,
}

// arn names a resource as SageMaker does: the name lower-cased.
func (h *Handler) arn(typ, name string) string {
	return "arn:aws:sagemaker:" + h.cfg.Region + ":" + h.cfg.Account + ":" + typ + "/" + strings.ToLower(name)
}

// parseARN reads one of serai's ARNs; ok is false for anything else
// (another region, account, service or resource type).
func (h *Handler) parseARN(s string) (kind records.Kind, typ, lowerName string, ok bool) {
	prefix := "arn:aws:sagemaker:" + h.cfg.Region + ":" + h.cfg.Account + ":"
	rest, found := strings.CutPrefix(s, prefix)
	if !found {
		return "", "", "", false
	}
	typ, name, found := strings.Cut(rest, "/")
	if !found {
		return "", "", "", false
	}
	kind, known := kindOfARNType[typ]
	if !known || !names.Valid(name) || strings.ToLower(name) != name {
		return "", "", "", false
	}
	return kind, typ, name, true
}
