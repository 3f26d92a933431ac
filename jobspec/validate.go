package jobspec

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/instancetypes"
	"github.com/seraihq/serai/internal/names"
)

var (
	sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)
	envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// principalRE is what serai accepts as an access key ID (AWS's are
	// 16 to 128 word characters).
	principalRE = regexp.MustCompile(`^[A-Za-z0-9]{1,128}$`)
)

// reservedEnv are variables serai sets itself or that would carry
// credentials into the model server, which must never see them.
var reservedEnv = map[string]string{
	"SAGEMAKER_BIND_TO_PORT": "serai sets it to the task's port",
	"SM_MODEL_DIR":           "serai sets it to the unpacked model directory",
	"AWS_ACCESS_KEY_ID":      "store credentials live in Vault and reach only the fetch task",
	"AWS_SECRET_ACCESS_KEY":  "store credentials live in Vault and reach only the fetch task",
	"AWS_SESSION_TOKEN":      "store credentials live in Vault and reach only the fetch task",
	"VAULT_TOKEN":            "the model server never holds a Vault token",
}

// ValidName reports whether s is a valid SageMaker-style name.
func ValidName(s string) bool { return names.Valid(s) }

type validator struct {
	spec  *Spec
	diags hcl.Diagnostics
}

// errf records an error positioned at attribute attr of body, or at fallback
// when the attribute is absent (a missing value is reported at its block).
func (v *validator) errf(body hcl.Body, attr string, fallback hcl.Range, summary, format string, args ...any) {
	rng := attrRange(body, attr, fallback)
	v.diags = append(v.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  &rng,
	})
}

// attrRange finds where an attribute's value is written.
func attrRange(body hcl.Body, attr string, fallback hcl.Range) hcl.Range {
	if sb, ok := body.(*hclsyntax.Body); ok && attr != "" {
		if a, ok := sb.Attributes[attr]; ok {
			return a.Expr.Range()
		}
	}
	return fallback
}

// blockRange finds a nested block's header, for errors about the whole block.
func blockRange(body hcl.Body, typ string, fallback hcl.Range) hcl.Range {
	if sb, ok := body.(*hclsyntax.Body); ok {
		for _, b := range sb.Blocks {
			if b.Type == typ {
				return b.DefRange()
			}
		}
	}
	return fallback
}

func validate(s *Spec) hcl.Diagnostics {
	v := &validator{spec: s}
	for _, n := range SortedNames(s.ArtifactStores) {
		v.store(s.ArtifactStores[n])
	}
	for _, n := range SortedNames(s.Models) {
		v.model(s.Models[n])
	}
	for _, n := range SortedNames(s.EndpointConfigs) {
		v.config(s.EndpointConfigs[n])
	}
	for _, n := range SortedNames(s.Endpoints) {
		v.endpoint(s.Endpoints[n])
	}
	return v.diags
}

func (v *validator) name(kind, name string, at hcl.Range) {
	if !ValidName(name) {
		v.diags = append(v.diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  fmt.Sprintf("Invalid %s name", kind),
			Detail:   fmt.Sprintf("%s name %q must match [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}: letters, digits and hyphens, starting and ending with a letter or digit, at most 63 characters.", kind, name),
			Subject:  at.Ptr(),
		})
	}
}

func (v *validator) duration(body hcl.Body, attr, val string, at hcl.Range, what string) {
	if val == "" {
		return
	}
	d, err := time.ParseDuration(val)
	if err != nil || d < 0 {
		v.errf(body, attr, at, "Invalid "+attr, "%s: %q is not a duration such as \"90s\", \"5m\" or \"1h30m\".", what, val)
	}
}

func (v *validator) store(s *ArtifactStore) {
	what := fmt.Sprintf("artifact_store %q", s.Name)
	v.name("artifact_store", s.Name, s.DefRange)
	if s.Endpoint != "" {
		u, err := url.Parse(s.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.errf(s.Body, "endpoint", s.DefRange, "Invalid endpoint", "%s: endpoint %q must be an http:// or https:// URL of an S3-compatible service; leave it out for AWS S3.", what, s.Endpoint)
		}
	}
	for _, p := range s.AllowedPrincipals {
		if p != "*" && !principalRE.MatchString(p) {
			v.errf(s.Body, "allowed_principals", s.DefRange, "Invalid allowed_principals", "%s: allowed_principals entry %q must be an access key ID (letters and digits, 1 to 128) or \"*\".", what, p)
		}
	}
	if sv := s.Vault; sv != nil {
		if sv.AWSRole != "" && (sv.KVPath != "" || sv.KVMount != "") {
			v.errf(sv.Body, "aws_role", s.DefRange, "Conflicting vault credentials", "%s: set either kv_mount/kv_path (static keys in KV v2) or aws_mount/aws_role (AWS secrets engine), not both.", what)
		}
		if sv.AWSMount != "" && sv.AWSRole == "" {
			v.errf(sv.Body, "aws_mount", s.DefRange, "Missing aws_role", "%s: aws_mount is set but aws_role is not.", what)
		}
		for attr, val := range map[string]string{"kv_mount": sv.KVMount, "kv_path": sv.KVPath, "aws_mount": sv.AWSMount, "aws_role": sv.AWSRole} {
			if strings.HasPrefix(val, "/") || strings.HasSuffix(val, "/") || strings.Contains(val, "..") || strings.ContainsAny(val, " \"{}*") {
				v.errf(sv.Body, attr, s.DefRange, "Invalid "+attr, "%s: %s %q must be a plain Vault path segment without leading or trailing slashes, quotes, braces or globs.", what, attr, val)
			}
		}
	}
}

func (v *validator) model(m *Model) {
	what := fmt.Sprintf("model %q", m.Name)
	v.name("model", m.Name, m.DefRange)
	switch {
	case m.Image == "" && m.Command == "":
		v.errf(m.Body, "", m.DefRange, "Missing image or command", "%s: set image (a container serving the SageMaker contract) or command (a program run with exec/raw_exec).", what)
	case m.Image != "" && m.Command != "":
		v.errf(m.Body, "command", m.DefRange, "Conflicting image and command", "%s: set image or command, not both.", what)
	}
	if m.Image != "" && m.Driver != "" && m.Driver != "docker" {
		v.errf(m.Body, "driver", m.DefRange, "Invalid driver", "%s: driver %q cannot run an image; use \"docker\" or leave driver out.", what, m.Driver)
	}
	if m.Command != "" && m.Driver != "" && m.Driver != "exec" && m.Driver != "raw_exec" {
		v.errf(m.Body, "driver", m.DefRange, "Invalid driver", "%s: driver %q cannot run a command; use \"exec\" (default) or \"raw_exec\".", what, m.Driver)
	}
	if m.Image == "" && m.Command == "" && len(m.Args) > 0 {
		v.errf(m.Body, "args", m.DefRange, "Invalid args", "%s: args need a command or an image.", what)
	}
	if m.Artifact != "" {
		u, err := url.Parse(m.Artifact)
		switch {
		case err != nil:
			v.errf(m.Body, "artifact", m.DefRange, "Invalid artifact", "%s: artifact %q is not a URL: %v.", what, m.Artifact, err)
		case u.Scheme == "s3":
			if u.Host == "" || strings.Trim(u.Path, "/") == "" {
				v.errf(m.Body, "artifact", m.DefRange, "Invalid artifact", "%s: artifact %q must be s3://bucket/key.", what, m.Artifact)
			}
			if m.ArtifactStore == "" {
				v.errf(m.Body, "artifact", m.DefRange, "Missing artifact_store", "%s: an s3:// artifact needs artifact_store naming the store whose credentials Vault holds.", what)
			}
		case u.Scheme == "https":
			if u.Host == "" {
				v.errf(m.Body, "artifact", m.DefRange, "Invalid artifact", "%s: artifact %q has no host.", what, m.Artifact)
			}
		case u.Scheme == "file":
			if u.Host != "" || !strings.HasPrefix(u.Path, "/") || u.Path == "/" {
				v.errf(m.Body, "artifact", m.DefRange, "Invalid artifact", "%s: artifact %q must be file:///absolute/path.", what, m.Artifact)
			}
		default:
			v.errf(m.Body, "artifact", m.DefRange, "Invalid artifact", "%s: artifact %q must be an s3://, https:// or file:// URL.", what, m.Artifact)
		}
	} else if m.SHA256 != "" {
		v.errf(m.Body, "sha256", m.DefRange, "Invalid sha256", "%s: sha256 is set but there is no artifact to check.", what)
	}
	if m.SHA256 != "" && !sha256RE.MatchString(m.SHA256) {
		v.errf(m.Body, "sha256", m.DefRange, "Invalid sha256", "%s: sha256 must be 64 lower-case hex digits.", what)
	}
	if m.ArtifactStore != "" && !strings.HasPrefix(m.Artifact, "s3://") {
		// A store's keys are for reading s3:// objects; a model naming a
		// store for another scheme would get them for nothing (or to copy
		// them: a file:// artifact can point at the fetch task's secrets).
		v.errf(m.Body, "artifact_store", m.DefRange, "Invalid artifact_store", "%s: artifact_store applies to s3:// artifacts only; leave it out for %q.", what, m.Artifact)
	}
	if m.ArtifactStore != "" {
		if _, ok := v.spec.ArtifactStores[m.ArtifactStore]; !ok {
			v.errf(m.Body, "artifact_store", m.DefRange, "Unknown artifact_store", "%s: artifact_store %q is not declared in the given spec files.", what, m.ArtifactStore)
		}
	}
	v.duration(m.Body, "download_timeout", m.DownloadTimeout, m.DefRange, what)
	v.duration(m.Body, "startup_timeout", m.StartupTimeout, m.DefRange, what)
	for _, k := range SortedNames(m.Environment) {
		if !envKeyRE.MatchString(k) {
			v.errf(m.Body, "environment", m.DefRange, "Invalid environment", "%s: environment key %q is not a valid variable name.", what, k)
		} else if why, ok := reservedEnv[k]; ok {
			v.errf(m.Body, "environment", m.DefRange, "Invalid environment", "%s: environment key %q is reserved: %s.", what, k, why)
		}
	}
}

func (v *validator) config(c *EndpointConfig) {
	what := fmt.Sprintf("endpoint_config %q", c.Name)
	v.name("endpoint_config", c.Name, c.DefRange)
	if len(c.Variants) == 0 {
		v.errf(c.Body, "", c.DefRange, "Missing variant", "%s: declare at least one variant block.", what)
	}
	if n := len(c.Variants) + len(c.ShadowVariants); n > MaxVariants {
		v.errf(c.Body, "", c.DefRange, "Too many variants", "%s: has %d variants (production and shadow); SageMaker allows at most %d.", what, n, MaxVariants)
	}
	if len(c.ShadowVariants) > 1 {
		v.errf(c.Body, "", c.ShadowVariants[1].DefRange, "Too many shadow variants", "%s: at most one shadow_variant is allowed, as in SageMaker.", what)
	}
	seenDC := map[string]bool{}
	for _, dc := range c.Datacenters {
		if dc == "" || strings.ContainsAny(dc, " \t\"") {
			v.errf(c.Body, "datacenters", c.DefRange, "Invalid datacenters", "%s: datacenter name %q is not valid.", what, dc)
		}
		if seenDC[dc] {
			v.errf(c.Body, "datacenters", c.DefRange, "Invalid datacenters", "%s: datacenter %q is listed twice.", what, dc)
		}
		seenDC[dc] = true
	}
	seen := map[string]hcl.Range{}
	var total float64
	for _, vr := range append(append([]*Variant(nil), c.Variants...), c.ShadowVariants...) {
		if prev, ok := seen[vr.Name]; ok {
			v.diags = append(v.diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Duplicate variant name",
				Detail:   fmt.Sprintf("%s: variant %q is already declared at %s.", what, vr.Name, prev),
				Subject:  vr.DefRange.Ptr(),
			})
		}
		seen[vr.Name] = vr.DefRange
		v.variant(c, vr)
		if !vr.Shadow && vr.EffectiveWeight() > 0 {
			total += vr.EffectiveWeight()
		}
	}
	if len(c.Variants) > 0 && total == 0 {
		v.errf(c.Variants[0].Body, "weight", c.DefRange, "Invalid weight", "%s: the weights of all production variants are zero, so no variant would receive traffic.", what)
	}
	if dc := c.DataCapture; dc != nil {
		rng := blockRange(c.Body, "data_capture", c.DefRange)
		if dc.SamplingPercent != nil && (*dc.SamplingPercent < 0 || *dc.SamplingPercent > 100) {
			v.errf(dc.Body, "sampling_percent", rng, "Invalid sampling_percent", "%s: data_capture sampling_percent %d must be between 0 and 100.", what, *dc.SamplingPercent)
		}
		u, err := url.Parse(dc.Destination)
		if err != nil || (u.Scheme != "s3" && u.Scheme != "file") || (u.Scheme == "s3" && u.Host == "") {
			v.errf(dc.Body, "destination", rng, "Invalid destination", "%s: data_capture destination %q must be an s3://bucket/prefix or file:///path URL.", what, dc.Destination)
		} else if u.Scheme == "s3" && dc.ArtifactStore == "" {
			v.errf(dc.Body, "destination", rng, "Missing artifact_store", "%s: an s3:// data_capture destination needs artifact_store.", what)
		} else if u.Scheme != "s3" && dc.ArtifactStore != "" {
			v.errf(dc.Body, "artifact_store", rng, "Invalid artifact_store", "%s: data_capture artifact_store applies to s3:// destinations only; leave it out for %q.", what, dc.Destination)
		}
		if dc.ArtifactStore != "" {
			if _, ok := v.spec.ArtifactStores[dc.ArtifactStore]; !ok {
				v.errf(dc.Body, "artifact_store", rng, "Unknown artifact_store", "%s: data_capture artifact_store %q is not declared in the given spec files.", what, dc.ArtifactStore)
			}
		}
		for _, m := range dc.Capture {
			if m != "input" && m != "output" {
				v.errf(dc.Body, "capture", rng, "Invalid capture", "%s: data_capture capture mode %q must be \"input\" or \"output\".", what, m)
			}
		}
	}
}

func (v *validator) variant(c *EndpointConfig, vr *Variant) {
	kind := "variant"
	if vr.Shadow {
		kind = "shadow_variant"
	}
	what := fmt.Sprintf("%s %q in endpoint_config %q", kind, vr.Name, c.Name)
	v.name(kind, vr.Name, vr.DefRange)
	if _, ok := v.spec.Models[vr.Model]; !ok {
		v.errf(vr.Body, "model", vr.DefRange, "Unknown model", "%s: model %q is not declared in the given spec files.", what, vr.Model)
	}
	if _, ok := instancetypes.Lookup(vr.InstanceType); !ok {
		v.errf(vr.Body, "instance_type", vr.DefRange, "Unknown instance_type", "%s: instance_type %q is not in serai's table; run `serai instance-types` to list them.", what, vr.InstanceType)
	}
	if vr.Weight != nil && *vr.Weight < 0 {
		v.errf(vr.Body, "weight", vr.DefRange, "Invalid weight", "%s: weight %g must not be negative.", what, *vr.Weight)
	}
	switch {
	case vr.Shadow && vr.Weight != nil:
		v.errf(vr.Body, "weight", vr.DefRange, "Invalid weight", "%s: shadow variants take no production traffic; use sampling_percent for the share of requests mirrored to them.", what)
	case !vr.Shadow && vr.SamplingPercent != nil:
		v.errf(vr.Body, "sampling_percent", vr.DefRange, "Invalid sampling_percent", "%s: sampling_percent applies only to shadow_variant blocks; production variants use weight.", what)
	case vr.SamplingPercent != nil && (*vr.SamplingPercent < 1 || *vr.SamplingPercent > 100):
		v.errf(vr.Body, "sampling_percent", vr.DefRange, "Invalid sampling_percent", "%s: sampling_percent %d must be between 1 and 100.", what, *vr.SamplingPercent)
	}
	as := vr.Autoscaling
	if vr.InstanceCount != nil {
		n := *vr.InstanceCount
		switch {
		case n < 0:
			v.errf(vr.Body, "instance_count", vr.DefRange, "Invalid instance_count", "%s: instance_count %d must be at least 1.", what, n)
		case n == 0 && (as == nil || as.MinCapacity != 0):
			v.errf(vr.Body, "instance_count", vr.DefRange, "Invalid instance_count", "%s: instance_count 0 is allowed only with autoscaling min_capacity = 0.", what)
		}
	}
	if r := vr.Resources; r != nil {
		for attr, p := range map[string]*int{"cpu": r.CPU, "memory": r.MemoryMB} {
			if p != nil && *p < 1 {
				v.errf(r.Body, attr, vr.DefRange, "Invalid "+attr, "%s: resources %s %d must be positive.", what, attr, *p)
			}
		}
		if r.GPU != nil && *r.GPU < 0 {
			v.errf(r.Body, "gpu", vr.DefRange, "Invalid gpu", "%s: resources gpu %d must not be negative.", what, *r.GPU)
		}
	}
	if as != nil {
		rng := blockRange(vr.Body, "autoscaling", vr.DefRange)
		if as.MinCapacity < 0 {
			v.errf(as.Body, "min_capacity", rng, "Invalid min_capacity", "%s: autoscaling min_capacity %d must not be negative.", what, as.MinCapacity)
		}
		if as.MaxCapacity < 1 {
			v.errf(as.Body, "max_capacity", rng, "Invalid max_capacity", "%s: autoscaling max_capacity %d must be at least 1.", what, as.MaxCapacity)
		}
		if as.MinCapacity > as.MaxCapacity {
			v.errf(as.Body, "min_capacity", rng, "Invalid min_capacity", "%s: autoscaling min_capacity %d is greater than max_capacity %d.", what, as.MinCapacity, as.MaxCapacity)
		} else if c := vr.Count(); vr.InstanceCount != nil && (c < as.MinCapacity || c > as.MaxCapacity) {
			v.errf(vr.Body, "instance_count", vr.DefRange, "Invalid instance_count", "%s: instance_count %d is outside autoscaling min_capacity..max_capacity (%d..%d).", what, c, as.MinCapacity, as.MaxCapacity)
		}
		if as.TargetInvocationsPerInstance <= 0 {
			v.errf(as.Body, "target_invocations_per_instance", rng, "Invalid target_invocations_per_instance", "%s: autoscaling target_invocations_per_instance %g must be positive (invocations per instance per minute).", what, as.TargetInvocationsPerInstance)
		}
		v.duration(as.Body, "scale_in_cooldown", as.ScaleInCooldown, rng, what)
		v.duration(as.Body, "scale_out_cooldown", as.ScaleOutCooldown, rng, what)
		v.duration(as.Body, "evaluation_interval", as.EvaluationInterval, rng, what)
		if vr.Shadow {
			v.errf(as.Body, "", rng, "Unsupported autoscaling", "%s: shadow variants do not autoscale; size them with instance_count.", what)
		}
	}
}

func (v *validator) endpoint(e *Endpoint) {
	what := fmt.Sprintf("endpoint %q", e.Name)
	v.name("endpoint", e.Name, e.DefRange)
	if strings.EqualFold(e.Name, "router") || strings.EqualFold(e.Name, "server") {
		// Consul service names are case-insensitive.
		own := contract.ServiceName(strings.ToLower(e.Name))
		v.diags = append(v.diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Reserved endpoint name",
			Detail:   fmt.Sprintf("%s: its instances would register as Consul service %q, the name serai's own %ss register under: clients would mistake them for serai's, and Consul's ACLs (deploy/consul) keep Nomad from registering it. Choose another name.", what, own, strings.ToLower(e.Name)),
			Subject:  e.DefRange.Ptr(),
		})
	}
	if _, ok := v.spec.EndpointConfigs[e.Config]; !ok {
		v.errf(e.Body, "config", e.DefRange, "Unknown config", "%s: endpoint_config %q is not declared in the given spec files.", what, e.Config)
	}
	d := e.Deployment
	if d == nil {
		return
	}
	rng := blockRange(e.Body, "deployment", e.DefRange)
	switch d.Strategy {
	case "", StrategyAllAtOnce:
		if d.CanarySize != nil {
			v.errf(d.Body, "canary_size", rng, "Invalid canary_size", "%s: canary_size only applies to strategy = \"canary\".", what)
		}
		if d.LinearStepSize != nil {
			v.errf(d.Body, "linear_step_size", rng, "Invalid linear_step_size", "%s: linear_step_size only applies to strategy = \"linear\".", what)
		}
	case StrategyCanary:
		if d.CanarySize == nil {
			v.errf(d.Body, "strategy", rng, "Missing canary_size", "%s: strategy \"canary\" needs canary_size (percent of traffic first shifted, 0 < size < 100).", what)
		} else if *d.CanarySize <= 0 || *d.CanarySize >= 100 {
			v.errf(d.Body, "canary_size", rng, "Invalid canary_size", "%s: canary_size %g must be a percentage between 0 and 100 (exclusive).", what, *d.CanarySize)
		}
		if d.LinearStepSize != nil {
			v.errf(d.Body, "linear_step_size", rng, "Invalid linear_step_size", "%s: linear_step_size only applies to strategy = \"linear\".", what)
		}
	case StrategyLinear:
		if d.LinearStepSize == nil {
			v.errf(d.Body, "strategy", rng, "Missing linear_step_size", "%s: strategy \"linear\" needs linear_step_size (percent of traffic shifted per step, 0 < size < 100).", what)
		} else if *d.LinearStepSize <= 0 || *d.LinearStepSize >= 100 {
			v.errf(d.Body, "linear_step_size", rng, "Invalid linear_step_size", "%s: linear_step_size %g must be a percentage between 0 and 100 (exclusive).", what, *d.LinearStepSize)
		}
		if d.CanarySize != nil {
			v.errf(d.Body, "canary_size", rng, "Invalid canary_size", "%s: canary_size only applies to strategy = \"canary\".", what)
		}
	default:
		v.errf(d.Body, "strategy", rng, "Invalid strategy", "%s: strategy %q must be one of \"all_at_once\", \"canary\", \"linear\".", what, d.Strategy)
	}
	v.duration(d.Body, "wait_interval", d.WaitInterval, rng, what)
	v.duration(d.Body, "termination_wait", d.TerminationWait, rng, what)
	v.duration(d.Body, "maximum_execution_timeout", d.MaximumExecutionTimeout, rng, what)
	if ar := d.AutoRollback; ar != nil {
		arRng := blockRange(d.Body, "auto_rollback", rng)
		if ar.MaxErrorRate != nil && (*ar.MaxErrorRate < 0 || *ar.MaxErrorRate > 1) {
			v.errf(ar.Body, "max_error_rate", arRng, "Invalid max_error_rate", "%s: auto_rollback max_error_rate %g must be a fraction between 0 and 1.", what, *ar.MaxErrorRate)
		}
		if ar.MinInvocations != nil && *ar.MinInvocations < 0 {
			v.errf(ar.Body, "min_invocations", arRng, "Invalid min_invocations", "%s: auto_rollback min_invocations %d must not be negative.", what, *ar.MinInvocations)
		}
		v.duration(ar.Body, "max_p99_latency", ar.MaxP99Latency, arRng, what)
		v.duration(ar.Body, "evaluation_period", ar.EvaluationCycle, arRng, what)
	}
}
