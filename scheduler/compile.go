// Package scheduler turns a validated spec into Nomad jobs: one job per
// (endpoint, generation), one task group per variant, the prestart fetch
// task with its Vault identity, services and checks for Consul, spreads,
// scaling policies and the job's UI block. Later it also owns the job
// lifecycle (register, watch deployments, stop old generations).
//
// It must not parse HCL (that is jobspec), write Vault policies (policies
// writes the documents; the server applies them) or route traffic.
package scheduler

import (
	"fmt"
	"github.com/seraihq/serai/contract"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/seraihq/serai/internal/instancetypes"
	"github.com/seraihq/serai/jobspec"
	"github.com/seraihq/serai/policies"
)

// Names shared with the fetch task, the router and Vault policies
// (docs/contracts.md).
const (
	FetchTaskName  = "fetch-model"
	ModelTaskName  = "model"
	PortLabel      = "http"
	ContainerPort  = 8080
	ModelDirInTask = "/opt/ml/model"
	ShadowPrefix   = "shadow-"
	StoreEnvFile   = "secrets/store.env"
	VaultAudience  = "vault.io"
	VaultIdentity  = "vault_default"
	killTimeout    = 30 * time.Second
	shutdownDelay  = 5 * time.Second
	lostAfter      = 15 * time.Minute
	fetchCPU       = 200
	fetchMemoryMB  = 256
)

// Options are the compiler's site settings: where things live on this
// cluster. None of it comes from users' specs.
type Options struct {
	// SeraiBinary is the path of the serai binary on Nomad clients, run as
	// the fetch task for exec/raw_exec models.
	SeraiBinary string
	// FetchImage is serai's own image, run as the fetch task for docker models.
	FetchImage string
	// RouterURL is the base URL clients invoke through; used for UI links.
	RouterURL string
	// MetricsURL links the Nomad UI to the endpoint's metrics; optional.
	MetricsURL string
	Namespace  string
	Region     string
	Priority   int
}

// DefaultFetchImage is serai's own image as `scripts/images` builds it
// (images/serai/Dockerfile). Not a ":latest" tag on purpose: Nomad's docker
// driver pulls ":latest" images even when they are present locally, and a
// locally built image must run without a registry. Sites that push serai to
// a registry set Options.FetchImage (`--fetch-image`).
const DefaultFetchImage = "serai:dev"

// DefaultOptions are used for fields left empty.
func DefaultOptions() Options {
	return Options{
		SeraiBinary: "/usr/local/bin/serai",
		FetchImage:  DefaultFetchImage,
		RouterURL:   "http://serai-router.service.consul:8081",
		Priority:    50,
	}
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.SeraiBinary == "" {
		o.SeraiBinary = d.SeraiBinary
	}
	if o.FetchImage == "" {
		o.FetchImage = d.FetchImage
	}
	if o.RouterURL == "" {
		o.RouterURL = d.RouterURL
	}
	if o.Priority == 0 {
		o.Priority = d.Priority
	}
	return o
}

// GroupName is the task group of a variant.
func GroupName(v *jobspec.Variant) string {
	if v.Shadow {
		return ShadowPrefix + v.Name
	}
	return v.Name
}

// Compile builds the Nomad job for generation gen of the named endpoint.
// The spec must be one jobspec validated; the same inputs always give the
// same job, so its JSON is byte-identical across runs.
func Compile(spec *jobspec.Spec, endpoint string, gen int, opts Options) (*api.Job, error) {
	ep, ok := spec.Endpoints[endpoint]
	if !ok {
		return nil, fmt.Errorf("compile: endpoint %q is not in the spec", endpoint)
	}
	cfg, ok := spec.EndpointConfigs[ep.Config]
	if !ok {
		return nil, fmt.Errorf("compile: endpoint %q: endpoint_config %q is not in the spec", endpoint, ep.Config)
	}
	if gen < 1 {
		return nil, fmt.Errorf("compile: endpoint %q: generation %d must be at least 1", endpoint, gen)
	}
	opts = opts.withDefaults()
	c := &compiler{spec: spec, ep: ep, cfg: cfg, gen: gen, opts: opts}
	return c.job()
}

type compiler struct {
	spec *jobspec.Spec
	ep   *jobspec.Endpoint
	cfg  *jobspec.EndpointConfig
	gen  int
	opts Options
}

func (c *compiler) job() (*api.Job, error) {
	id := contract.JobID(c.ep.Name, c.gen)
	dcs := c.cfg.Datacenters
	if len(dcs) == 0 {
		dcs = []string{"*"}
	}
	strategy := jobspec.StrategyAllAtOnce
	if c.ep.Deployment != nil && c.ep.Deployment.Strategy != "" {
		strategy = c.ep.Deployment.Strategy
	}
	var models []string
	seen := map[string]bool{}
	variants := append(append([]*jobspec.Variant(nil), c.cfg.Variants...), c.cfg.ShadowVariants...)
	for _, v := range variants {
		if !seen[v.Model] {
			seen[v.Model] = true
			models = append(models, v.Model)
		}
	}
	sort.Strings(models)

	job := &api.Job{
		ID:          ptr(id),
		Name:        ptr(id),
		Type:        ptr(api.JobTypeService),
		Priority:    ptr(c.opts.Priority),
		Datacenters: dcs,
		Meta: map[string]string{
			contract.MetaEndpoint:   c.ep.Name,
			contract.MetaConfig:     c.cfg.Name,
			contract.MetaGeneration: strconv.Itoa(c.gen),
			contract.MetaModels:     strings.Join(models, ","),
			contract.MetaStrategy:   strategy,
		},
		Update: &api.UpdateStrategy{
			MaxParallel:      ptr(1),
			HealthCheck:      ptr("checks"),
			MinHealthyTime:   ptr(10 * time.Second),
			HealthyDeadline:  ptr(5 * time.Minute),
			ProgressDeadline: ptr(10 * time.Minute),
			AutoRevert:       ptr(true),
		},
		UI: c.ui(variants),
	}
	if c.opts.Namespace != "" {
		job.Namespace = ptr(c.opts.Namespace)
	}
	if c.opts.Region != "" {
		job.Region = ptr(c.opts.Region)
	}
	for _, v := range variants {
		g, err := c.group(v, dcs)
		if err != nil {
			return nil, err
		}
		job.TaskGroups = append(job.TaskGroups, g)
	}
	return job, nil
}

// ui makes the Nomad UI tell the story: which endpoint, which config, the
// traffic split, and links to invoke and watch it.
func (c *compiler) ui(variants []*jobspec.Variant) *api.JobUIConfig {
	var total float64
	for _, v := range c.cfg.Variants {
		total += v.EffectiveWeight()
	}
	var parts []string
	for _, v := range variants {
		if v.Shadow {
			parts = append(parts, fmt.Sprintf("shadow `%s` (%s, mirrors %d%%)", v.Name, v.Model, samplingPercent(v)))
			continue
		}
		share := 0.0
		if total > 0 {
			share = 100 * v.EffectiveWeight() / total
		}
		parts = append(parts, fmt.Sprintf("`%s` (%s, %.4g%% of traffic, %d × %s)", v.Name, v.Model, share, v.Count(), v.InstanceType))
	}
	desc := fmt.Sprintf("serai endpoint **%s**, endpoint_config **%s**, generation %d. Variants: %s.",
		c.ep.Name, c.cfg.Name, c.gen, strings.Join(parts, "; "))
	base := strings.TrimRight(c.opts.RouterURL, "/")
	links := []*api.JobUILink{
		{Label: "Invoke " + c.ep.Name, URL: base + "/endpoints/" + c.ep.Name + "/invocations"},
		{Label: "Router metrics", URL: base + "/metrics"},
	}
	if c.opts.MetricsURL != "" {
		links = append(links, &api.JobUILink{Label: "Endpoint dashboard", URL: strings.ReplaceAll(c.opts.MetricsURL, "{endpoint}", c.ep.Name)})
	}
	return &api.JobUIConfig{Description: desc, Links: links}
}

func samplingPercent(v *jobspec.Variant) int {
	if v.SamplingPercent == nil {
		return 100
	}
	return *v.SamplingPercent
}

func (c *compiler) group(v *jobspec.Variant, dcs []string) (*api.TaskGroup, error) {
	m := c.spec.Models[v.Model]
	if m == nil {
		return nil, fmt.Errorf("compile: variant %q: model %q is not in the spec", v.Name, v.Model)
	}
	name := GroupName(v)
	startup := dur(m.StartupTimeout, jobspec.DefaultStartupTimeout)
	port := api.Port{Label: PortLabel}
	if m.Image != "" {
		port.To = ContainerPort
	}
	g := &api.TaskGroup{
		Name:  ptr(name),
		Count: ptr(v.Count()),
		Meta: map[string]string{
			contract.MetaVariant: v.Name,
			contract.MetaModel:   v.Model,
		},
		Networks: []*api.NetworkResource{{DynamicPorts: []api.Port{port}}},
		Services: []*api.Service{c.service(v)},
		// Deregister from Consul, and so from every router, before the
		// model server gets SIGTERM: in-flight and just-routed requests
		// still find it alive.
		ShutdownDelay: ptr(shutdownDelay),
		RestartPolicy: &api.RestartPolicy{
			Attempts: ptr(3),
			Interval: ptr(5 * time.Minute),
			Delay:    ptr(15 * time.Second),
			Mode:     ptr(api.RestartPolicyModeFail),
		},
		ReschedulePolicy: &api.ReschedulePolicy{
			Delay:         ptr(30 * time.Second),
			DelayFunction: ptr("exponential"),
			MaxDelay:      ptr(10 * time.Minute),
			Unlimited:     ptr(true),
		},
		// A datacenter that loses its link keeps serving whoever can still
		// reach it; Nomad places replacements elsewhere at once and, when
		// the link comes back within lostAfter, keeps the originals and
		// stops the replacements, so the spread across datacenters
		// returns by itself.
		Disconnect: &api.DisconnectStrategy{
			LostAfter: ptr(lostAfter),
			Replace:   ptr(true),
			Reconcile: ptr(api.ReconcileOptionKeepOriginal),
		},
		Update: &api.UpdateStrategy{
			HealthyDeadline:  ptr(startup),
			ProgressDeadline: ptr(startup + 5*time.Minute),
		},
	}
	if v.Shadow {
		g.Meta[contract.MetaShadow] = "true"
	} else {
		g.Meta[contract.MetaWeight] = strconv.FormatFloat(v.EffectiveWeight(), 'g', -1, 64)
	}
	if v.Count() >= 2 && len(dcs) >= 2 && !contains(dcs, "*") {
		g.Spreads = []*api.Spread{
			{Attribute: "${node.datacenter}", Weight: ptr(int8(100)), SpreadTarget: evenTargets(dcs)},
			{Attribute: "${node.unique.id}", Weight: ptr(int8(50))},
		}
	}
	if as := v.Autoscaling; as != nil {
		s := policies.Scaling{
			Endpoint:           c.ep.Name,
			Variant:            v.Name,
			Generation:         c.gen,
			Target:             as.TargetInvocationsPerInstance,
			ScaleInCooldown:    dur(as.ScaleInCooldown, jobspec.DefaultCooldown),
			ScaleOutCooldown:   dur(as.ScaleOutCooldown, jobspec.DefaultCooldown),
			EvaluationInterval: dur(as.EvaluationInterval, jobspec.DefaultEvaluationPeriod),
		}
		g.Scaling = &api.ScalingPolicy{
			Type:    "horizontal",
			Min:     ptr(int64(as.MinCapacity)),
			Max:     ptr(int64(as.MaxCapacity)),
			Enabled: ptr(true),
			Policy:  s.NomadPolicy(),
		}
	}
	if m.Artifact != "" {
		ft, err := c.fetchTask(m)
		if err != nil {
			return nil, err
		}
		g.Tasks = append(g.Tasks, ft)
	}
	mt, err := c.modelTask(v, m)
	if err != nil {
		return nil, err
	}
	g.Tasks = append(g.Tasks, mt)
	return g, nil
}

// evenTargets splits 100% across datacenters, giving any remainder to the
// first ones so the targets always add up to exactly 100.
func evenTargets(dcs []string) []*api.SpreadTarget {
	n := len(dcs)
	out := make([]*api.SpreadTarget, n)
	for i, dc := range dcs {
		pct := 100 / n
		if i < 100%n {
			pct++
		}
		out[i] = &api.SpreadTarget{Value: dc, Percent: uint8(pct)}
	}
	return out
}

func (c *compiler) service(v *jobspec.Variant) *api.Service {
	tags := contract.InstanceTags{Variant: v.Name, Generation: c.gen, Model: v.Model, Shadow: v.Shadow}.Format()
	startup := dur(c.spec.Models[v.Model].StartupTimeout, jobspec.DefaultStartupTimeout)
	return &api.Service{
		Name:      contract.ServiceName(c.ep.Name),
		Provider:  "consul",
		PortLabel: PortLabel,
		Tags:      tags,
		// Routers use only instances whose meta names this job and
		// generation (contract.TrustedMeta).
		Meta: contract.ServiceMeta(c.ep.Name, c.gen),
		Checks: []api.ServiceCheck{{
			Name:     "ping",
			Type:     "http",
			Path:     "/ping",
			Interval: 5 * time.Second,
			Timeout:  2 * time.Second,
			CheckRestart: &api.CheckRestart{
				Limit: 3,
				Grace: ptr(startup),
			},
		}},
	}
}

// modelDir is where the fetch task unpacks and the model server reads. The
// alloc dir is shared by every task of the group; NOMAD_ALLOC_DIR resolves
// inside each task's own view of it.
const modelDir = "${NOMAD_ALLOC_DIR}/data/model"

func (c *compiler) fetchTask(m *jobspec.Model) (*api.Task, error) {
	// Only an s3:// artifact read through a store gets the store's keys
	// and a Vault identity. Validation already refuses a store on any
	// other scheme; this is the second wall, because a file:// URL (where
	// the operator allows them) could name the very file the template
	// renders the keys into.
	var store *jobspec.ArtifactStore
	if strings.HasPrefix(m.Artifact, "s3://") {
		store = c.spec.ArtifactStores[m.ArtifactStore]
	}
	env := map[string]string{
		"SERAI_MODEL_NAME":       m.Name,
		"SERAI_MODEL_URL":        m.Artifact,
		"SERAI_MODEL_DIR":        modelDir,
		"SERAI_DOWNLOAD_TIMEOUT": dur(m.DownloadTimeout, jobspec.DefaultDownloadTimeout).String(),
	}
	if m.SHA256 != "" {
		env["SERAI_MODEL_SHA256"] = m.SHA256
	}
	t := &api.Task{
		Name:        FetchTaskName,
		Lifecycle:   &api.TaskLifecycle{Hook: api.TaskLifecycleHookPrestart, Sidecar: false},
		KillTimeout: ptr(10 * time.Second),
		Resources:   &api.Resources{CPU: ptr(fetchCPU), MemoryMB: ptr(fetchMemoryMB)},
		Meta:        map[string]string{contract.MetaModel: m.Name},
	}
	if m.Image != "" {
		t.Driver = "docker"
		t.Config = map[string]any{"image": c.opts.FetchImage, "args": []string{"fetch-model"}}
	} else {
		t.Driver = m.TaskDriver()
		t.Config = map[string]any{"command": c.opts.SeraiBinary, "args": []string{"fetch-model"}}
	}
	if store != nil {
		env["SERAI_STORE_NAME"] = store.Name
		env["SERAI_STORE_ENDPOINT"] = store.Endpoint
		env["SERAI_STORE_REGION"] = store.EffectiveRegion()
		env["SERAI_STORE_PATH_STYLE"] = strconv.FormatBool(store.PathStyle)
		// Only this task gets a Vault identity; its token stays out of the
		// task's env and files, and the template renders the store keys into
		// this task's environment alone.
		t.Vault = &api.Vault{
			Role:        contract.VaultRole(m.Name),
			ChangeMode:  ptr("noop"),
			Env:         ptr(false),
			DisableFile: ptr(true),
		}
		t.Identities = []*api.WorkloadIdentity{{
			Name:     VaultIdentity,
			Audience: []string{VaultAudience},
			TTL:      time.Hour,
		}}
		t.Templates = []*api.Template{{
			EmbeddedTmpl: ptr(credentialTemplate(store)),
			DestPath:     ptr(StoreEnvFile),
			Envvars:      ptr(true),
			ChangeMode:   ptr("noop"),
			Perms:        ptr("0400"),
		}}
	}
	t.Env = env
	return t, nil
}

// credentialTemplate renders the store's keys as an env file. It reads the
// store's credential path and nothing else: that is the one path the
// model's Vault policy allows.
func credentialTemplate(s *jobspec.ArtifactStore) string {
	path := s.CredentialPath()
	if s.UsesAWSEngine() {
		return fmt.Sprintf(`{{ with secret %q }}
AWS_ACCESS_KEY_ID={{ .Data.access_key }}
AWS_SECRET_ACCESS_KEY={{ .Data.secret_key }}
{{ with .Data.security_token }}AWS_SESSION_TOKEN={{ . }}{{ end }}
{{ end }}
`, path)
	}
	return fmt.Sprintf(`{{ with secret %q }}
AWS_ACCESS_KEY_ID={{ .Data.data.access_key_id }}
AWS_SECRET_ACCESS_KEY={{ .Data.data.secret_access_key }}
{{ with .Data.data.session_token }}AWS_SESSION_TOKEN={{ . }}{{ end }}
{{ end }}
`, path)
}

func (c *compiler) modelTask(v *jobspec.Variant, m *jobspec.Model) (*api.Task, error) {
	it, ok := instancetypes.Lookup(v.InstanceType)
	if !ok {
		return nil, fmt.Errorf("compile: variant %q: unknown instance_type %q", v.Name, v.InstanceType)
	}
	res := &api.Resources{CPU: ptr(it.CPUMHz()), MemoryMB: ptr(it.MemoryMB)}
	gpus := it.GPUs
	if r := v.Resources; r != nil {
		if r.CPU != nil {
			res.CPU = ptr(*r.CPU)
		}
		if r.MemoryMB != nil {
			res.MemoryMB = ptr(*r.MemoryMB)
		}
		if r.GPU != nil {
			gpus = *r.GPU
		}
	}
	if gpus > 0 {
		dev := &api.RequestedDevice{Name: "nvidia/gpu", Count: ptr(uint64(gpus))}
		if it.GPUModel != "" && (v.Resources == nil || v.Resources.GPU == nil) {
			dev.Constraints = []*api.Constraint{{LTarget: "${device.model}", RTarget: it.GPUModel, Operand: "="}}
		}
		res.Devices = []*api.RequestedDevice{dev}
	}
	env := map[string]string{}
	for k, val := range m.Environment {
		env[k] = val
	}
	args := m.Args
	if len(args) == 0 {
		args = []string{"serve"}
	}
	t := &api.Task{
		Name:        ModelTaskName,
		Driver:      m.TaskDriver(),
		Resources:   res,
		KillSignal:  "SIGTERM",
		KillTimeout: ptr(killTimeout),
		Meta:        map[string]string{contract.MetaModel: m.Name, contract.MetaVariant: v.Name},
	}
	if m.Image != "" {
		env["SM_MODEL_DIR"] = ModelDirInTask
		cfg := map[string]any{"image": m.Image, "args": args, "ports": []string{PortLabel}}
		if m.Artifact != "" {
			cfg["mount"] = []map[string]any{{
				"type": "bind", "source": "../alloc/data/model", "target": ModelDirInTask, "readonly": true,
			}}
		}
		t.Config = cfg
	} else {
		env["SAGEMAKER_BIND_TO_PORT"] = "${NOMAD_PORT_" + PortLabel + "}"
		env["SM_MODEL_DIR"] = modelDir
		t.Config = map[string]any{"command": m.Command, "args": args}
	}
	t.Env = env
	return t, nil
}

func dur(s, def string) time.Duration {
	if s == "" {
		s = def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		// Validated specs never get here; fall back to the default rather
		// than compile a zero duration.
		d, _ = time.ParseDuration(def)
	}
	return d
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func ptr[T any](v T) *T { return &v }
