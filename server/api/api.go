package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/seraihq/serai/server/records"
	"github.com/seraihq/serai/server/smapi"
)

// TargetPrefix starts every X-Amz-Target the API serves.
const TargetPrefix = "SageMaker."

// ContentType is the AWS JSON 1.1 media type of requests and answers.
const ContentType = "application/x-amz-json-1.1"

// Defaults of Config.
const (
	DefaultRegion       = "us-east-1"
	DefaultAccount      = "000000000000"
	DefaultMaxBodyBytes = 1 << 20
)

// Observer reports what runs for an endpoint, for DescribeEndpoint's live
// counts. The cluster adapters implement it (passing instances from
// Consul, desired counts and images from Nomad).
type Observer interface {
	Observe(ctx context.Context, endpoint string) (Observation, error)
}

// Observation is what runs for one endpoint, per generation and variant
// (shadow variants by their variant name).
type Observation struct {
	Variants map[GV]VariantObservation
}

// GV names a variant of one generation.
type GV struct {
	Generation int
	Variant    string
}

// VariantObservation is one variant of one generation as it runs.
type VariantObservation struct {
	// Passing is the number of instances passing their Consul check.
	Passing int
	// Desired is the Nomad group's count.
	Desired int
	// Image is the image the tasks run ("" for commands).
	Image string
	// ScalingEvents are the group's last scaling events, oldest first.
	ScalingEvents []smapi.ScalingEvent
}

// Config wires a Handler.
type Config struct {
	// Store holds the records; its KV must also implement
	// records.Txner (ConsulKV and MemKV do).
	Store records.Store
	// Region and Account go into ARNs; Account is 12 digits.
	Region  string
	Account string
	// Observer gives DescribeEndpoint live counts; nil: counts are 0
	// (current) and the config's (desired).
	Observer Observer
	// SigV4KeyFile, when set, turns on AWS Signature Version 4 checks
	// with the keys in this file (the router's format: see
	// sigv4.LoadKeys). Requests are then signed for service "sagemaker"
	// in Region.
	SigV4KeyFile string
	// OperatorKeyFile holds the operators' keys (same format); they sign
	// requests like any key and may also make the operator operations
	// (Serai.PutArtifactStore, ...) and name any artifact store. Either
	// file turns authentication on. Without any, every caller is an
	// operator (see operator.go).
	OperatorKeyFile string
	// AllowFileArtifacts lets models name file:// artifacts, read from
	// the Nomad client's disk by the fetch task. Off by default: such a
	// URL can name any file the fetch task can read. serai dev sets it.
	AllowFileArtifacts bool
	Logger             hclog.Logger
	// Now is the clock.
	Now func() time.Time
	// MaxBodyBytes bounds a request body.
	MaxBodyBytes int64
	// ObserveTimeout bounds one Observer call, so a slow cluster does not
	// hold DescribeEndpoint (and the SDK waiters) up.
	ObserveTimeout time.Duration
	// RequestTimeout bounds one request's work on the store: a Consul
	// that accepts connections but does not answer yields a 503 rather
	// than a request that hangs.
	RequestTimeout time.Duration
	// AllowedDrivers are the Nomad task drivers models may run with
	// (admission.go); default DefaultAllowedDrivers.
	AllowedDrivers []string
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Region: DefaultRegion, Account: DefaultAccount, MaxBodyBytes: DefaultMaxBodyBytes,
		ObserveTimeout: 2 * time.Second, RequestTimeout: 15 * time.Second, AllowedDrivers: DefaultAllowedDrivers()}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Region == "" {
		c.Region = d.Region
	}
	if c.Account == "" {
		c.Account = d.Account
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = d.MaxBodyBytes
	}
	if c.ObserveTimeout <= 0 {
		c.ObserveTimeout = d.ObserveTimeout
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = d.RequestTimeout
	}
	if len(c.AllowedDrivers) == 0 {
		c.AllowedDrivers = d.AllowedDrivers
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

var (
	accountRE = regexp.MustCompile(`^[0-9]{12}$`)
	regionRE  = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)
)

// Validate reports what is wrong with the configuration.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.Store.KV == nil {
		errs = append(errs, errors.New("api: Store is required"))
	} else if _, ok := c.Store.KV.(records.Txner); !ok {
		errs = append(errs, fmt.Errorf("api: the store's KV (%T) cannot run transactions (records.Txner)", c.Store.KV))
	}
	if !accountRE.MatchString(c.Account) {
		errs = append(errs, fmt.Errorf("api: account %q must be 12 digits", c.Account))
	}
	if !regionRE.MatchString(c.Region) {
		errs = append(errs, fmt.Errorf("api: region %q is not a region name such as us-east-1", c.Region))
	}
	if err := validateDrivers(c.AllowedDrivers); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Handler serves SageMaker's control-plane protocol.
type Handler struct {
	cfg  Config
	txn  records.Txner
	log  hclog.Logger
	auth *authenticator
	ops  map[string]opFunc
	// operators are the access key IDs of OperatorKeyFile.
	operators atomic.Pointer[map[string]bool]
}

var _ http.Handler = (*Handler)(nil)

type opFunc func(h *Handler, ctx context.Context, body []byte) (any, error)

// New returns a Handler.
func New(cfg Config) (*Handler, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h := &Handler{cfg: cfg, txn: cfg.Store.KV.(records.Txner), log: cfg.Logger.Named("api")}
	if cfg.SigV4KeyFile != "" || cfg.OperatorKeyFile != "" {
		keys, ops, err := loadKeys(cfg.SigV4KeyFile, cfg.OperatorKeyFile)
		if err != nil {
			return nil, err
		}
		if h.auth, err = newAuthenticator(keys, cfg.Region, cfg.Now); err != nil {
			return nil, err
		}
		h.operators.Store(&ops)
	}
	h.ops = map[string]opFunc{
		"CreateModel":                        op((*Handler).createModel),
		"DescribeModel":                      op((*Handler).describeModel),
		"ListModels":                         op((*Handler).listModels),
		"DeleteModel":                        op((*Handler).deleteModel),
		"CreateEndpointConfig":               op((*Handler).createEndpointConfig),
		"DescribeEndpointConfig":             op((*Handler).describeEndpointConfig),
		"ListEndpointConfigs":                op((*Handler).listEndpointConfigs),
		"DeleteEndpointConfig":               op((*Handler).deleteEndpointConfig),
		"CreateEndpoint":                     op((*Handler).createEndpoint),
		"DescribeEndpoint":                   op((*Handler).describeEndpoint),
		"ListEndpoints":                      op((*Handler).listEndpoints),
		"UpdateEndpoint":                     op((*Handler).updateEndpoint),
		"UpdateEndpointWeightsAndCapacities": op((*Handler).updateWeights),
		"DeleteEndpoint":                     op((*Handler).deleteEndpoint),
		"AddTags":                            op((*Handler).addTags),
		"ListTags":                           op((*Handler).listTags),
		"DeleteTags":                         op((*Handler).deleteTags),
	}
	return h, nil
}

// ReloadSigV4Keys re-reads the key files (on SIGHUP, say); on error the
// keys in use stay. It is an error when SigV4 is off.
func (h *Handler) ReloadSigV4Keys() error {
	if h.auth == nil {
		return errors.New("api: SigV4 is not enabled")
	}
	keys, ops, err := loadKeys(h.cfg.SigV4KeyFile, h.cfg.OperatorKeyFile)
	if err != nil {
		return err
	}
	if err := h.auth.setKeys(keys); err != nil {
		return err
	}
	h.operators.Store(&ops)
	return nil
}

// Operations lists the operations served, for docs and tests.
func (h *Handler) Operations() []string {
	out := make([]string, 0, len(h.ops))
	for k := range h.ops {
		out = append(out, k)
	}
	return out
}

// op adapts a typed operation to the dispatcher: strict decoding (an
// unknown member is refused by name rather than ignored, so a SageMaker
// feature serai lacks is never silently dropped), then the operation.
func op[In, Out any](f func(h *Handler, ctx context.Context, in *In) (Out, error)) opFunc {
	return func(h *Handler, ctx context.Context, body []byte) (any, error) {
		in := new(In)
		if err := decode(body, in); err != nil {
			return nil, err
		}
		return f(h, ctx, in)
	}
}

// decode reads one JSON object into v. Malformed JSON and wrong types
// are SerializationException, unknown members ValidationException, as
// SageMaker answers them.
func decode(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			return &apiError{status: http.StatusBadRequest, code: smapi.ErrSerialization, msg: "The request body holds more than one JSON value."}
		}
		return nil
	}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn), errors.Is(err, io.ErrUnexpectedEOF):
		return &apiError{status: http.StatusBadRequest, code: smapi.ErrSerialization, msg: "The request body is not valid JSON: " + err.Error()}
	case errors.As(err, &typ):
		where := typ.Field
		if where == "" {
			where = "the request"
		}
		return &apiError{status: http.StatusBadRequest, code: smapi.ErrSerialization,
			msg: fmt.Sprintf("Value at '%s' must be %s, not a JSON %s.", where, jsonKind(typ.Type.Kind().String()), typ.Value)}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.TrimPrefix(err.Error(), "json: unknown field ")
		return validationf("Unknown member %s: serai does not support it (docs/api.md lists what it serves).", name)
	}
	return &apiError{status: http.StatusBadRequest, code: smapi.ErrSerialization, msg: "The request body cannot be read: " + err.Error()}
}

func jsonKind(k string) string {
	switch k {
	case "int", "int64", "int32", "float64", "float32":
		return "a number"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "slice":
		return "a list"
	case "map", "struct", "ptr":
		return "an object"
	}
	return "of another type"
}

// ServeHTTP serves POST / with X-Amz-Target: SageMaker.<Operation> (and
// serai's operator operations, Serai.<Operation>: operator.go).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := requestID()
	w.Header().Set("X-Amzn-Requestid", reqID)
	start := h.cfg.Now()
	target := r.Header.Get("X-Amz-Target")
	fn, opName, known := h.lookup(target)

	var signed *signedRequest
	if h.auth != nil {
		var ae *apiError
		if signed, ae = h.auth.precheck(r); ae != nil {
			h.fail(w, r, opName, reqID, ae)
			return
		}
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.fail(w, r, opName, reqID, &apiError{status: http.StatusMethodNotAllowed, code: smapi.ErrUnknownOperation, msg: "Only POST is served."})
		return
	}
	if r.URL.Path != "/" {
		h.fail(w, r, opName, reqID, &apiError{status: http.StatusNotFound, code: smapi.ErrUnknownOperation, msg: "Only the path / is served."})
		return
	}
	if r.ContentLength > h.cfg.MaxBodyBytes {
		h.fail(w, r, opName, reqID, tooLarge(h.cfg.MaxBodyBytes))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, h.cfg.MaxBodyBytes+1))
	if err != nil {
		h.fail(w, r, opName, reqID, &apiError{status: http.StatusBadRequest, code: smapi.ErrSerialization, msg: "Could not read the request body."})
		return
	}
	if int64(len(body)) > h.cfg.MaxBodyBytes {
		h.fail(w, r, opName, reqID, tooLarge(h.cfg.MaxBodyBytes))
		return
	}
	if signed != nil {
		if ae := h.auth.verify(r, signed, body); ae != nil {
			h.fail(w, r, opName, reqID, ae)
			return
		}
	}
	if !known {
		h.fail(w, r, opName, reqID, &apiError{status: http.StatusBadRequest, code: smapi.ErrUnknownOperation,
			msg: fmt.Sprintf("X-Amz-Target %s is not an operation serai serves.", quoteValue(truncate(target, 128)))})
		return
	}
	if ct := mediaType(r.Header.Get("Content-Type")); ct != ContentType && ct != "application/x-amz-json-1.0" {
		h.fail(w, r, opName, reqID, &apiError{status: http.StatusBadRequest, code: smapi.ErrSerialization,
			msg: "Content-Type must be " + ContentType + "."})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.RequestTimeout)
	defer cancel()
	if signed != nil {
		ctx = withPrincipal(ctx, signed.AccessKeyID)
	}
	out, err := h.run(ctx, fn, body)
	if err != nil {
		h.fail(w, r, opName, reqID, storeError(err))
		return
	}
	b, err := json.Marshal(out)
	if err != nil {
		h.fail(w, r, opName, reqID, &apiError{status: http.StatusInternalServerError, code: smapi.ErrInternalFailure, msg: "Could not encode the answer.", cause: err})
		return
	}
	w.Header().Set("Content-Type", ContentType)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	h.log.Debug("request served", "operation", opName, "request_id", reqID, "duration", h.cfg.Now().Sub(start))
}

// run calls one operation, turning a panic into a 500 so one bad request
// cannot take the server down with it.
func (h *Handler) run(ctx context.Context, fn opFunc, body []byte) (out any, err error) {
	defer func() {
		if p := recover(); p != nil {
			h.log.Error("operation panicked", "panic", p)
			out, err = nil, &apiError{status: http.StatusInternalServerError, code: smapi.ErrInternalFailure, msg: "Internal error; see the server log."}
		}
	}()
	return fn(h, ctx, body)
}

func tooLarge(max int64) *apiError {
	return &apiError{status: http.StatusRequestEntityTooLarge, code: smapi.ErrRequestTooLarge,
		msg: fmt.Sprintf("The request body is larger than %d bytes.", max)}
}

// fail writes an error answer in SageMaker's shape.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, opName, reqID string, e *apiError) {
	lvl := hclog.Debug
	if e.status >= 500 {
		lvl = hclog.Warn
	}
	if h.log.IsDebug() || lvl == hclog.Warn {
		args := []any{"operation", truncate(opName, 64), "request_id", reqID, "status", e.status, "error_type", e.code, "message", truncate(e.msg, 512)}
		if e.cause != nil {
			args = append(args, "cause", e.cause.Error())
		}
		h.log.Log(lvl, "request refused", args...)
	}
	writeError(w, e)
}

func writeError(w http.ResponseWriter, e *apiError) {
	b, _ := json.Marshal(smapi.Error{Type: e.code, Message: e.msg})
	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("X-Amzn-Errortype", e.code)
	w.WriteHeader(e.status)
	_, _ = w.Write(b)
}

func mediaType(ct string) string {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func requestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	s := hex.EncodeToString(b[:])
	return s[:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]
}
