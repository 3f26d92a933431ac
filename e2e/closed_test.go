package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sagemaker"
	smtypes "github.com/aws/aws-sdk-go-v2/service/sagemaker/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/seraihq/serai/contract"
	"github.com/seraihq/serai/internal/testagents"
)

// TestControlPlaneClosedByDefault tries, against the real serai binary on
// real Consul and Nomad agents, what someone on the network does with a
// control plane left open: (a) a server told to listen on every address
// without keys refuses to start, and starts only with --insecure-no-auth,
// warning; (b) a server with SigV4 keys refuses an unsigned CreateModel;
// (c) a correctly signed caller (the AWS SDK, and serai apply) still
// cannot create a raw_exec model — a program on every Nomad client's
// host — on a server with the default --allow-drivers. Nothing reaches
// Consul KV or Nomad.
func TestControlPlaneClosedByDefault(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	consul := testagents.StartConsul(t)
	nomad := testagents.StartNomad(t, testagents.NomadOptions{Consul: consul})
	dir := t.TempDir()
	serai := buildBinary(t, dir, "serai", "../cmd/serai")
	agentEnv := append(os.Environ(), "CONSUL_HTTP_ADDR="+consul.Addr, "NOMAD_ADDR="+nomad.Addr)
	// Every address is bound; the test connects through loopback only.
	anyAddr := func() (listen, local string) {
		_, port, _ := net.SplitHostPort(testagents.FreeLoopbackAddr(t))
		return "0.0.0.0:" + port, "127.0.0.1:" + port
	}

	// (a) No keys, every address: refused before listening.
	listen, local := anyAddr()
	for _, l := range []string{listen, ":" + strings.Split(listen, ":")[1]} {
		cmd := exec.CommandContext(ctx, serai, "server", "--listen", l, "--id", "open")
		cmd.Env = agentEnv
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Fatalf("serai server --listen %s without keys: %v (want exit 2)\n%s", l, err, out)
		}
		for _, want := range []string{"not loopback", "--sigv4-keys", "--insecure-no-auth"} {
			if !bytes.Contains(out, []byte(want)) {
				t.Errorf("serai server --listen %s: the refusal does not say %q:\n%s", l, want, out)
			}
		}
		t.Logf("RESULT open API refused: serai server --listen %s exited %d: %s", l, ee.ExitCode(), bytes.TrimSpace(out))
	}
	if entries, _, err := consul.Client.Catalog().Service("serai-server", "", nil); err != nil || len(entries) != 0 {
		t.Fatalf("a refused server registered in Consul: %v %v", entries, err)
	}

	// (a) With --insecure-no-auth it starts, and says so.
	open := startServerArgs(t, serai, dir, "open", local, agentEnv,
		"--listen", listen, "--advertise-addr", local, "--insecure-no-auth")
	open.stop(t)
	if log := open.log(t); !strings.Contains(log, "[WARN]") || !strings.Contains(log, "--insecure-no-auth") {
		t.Fatalf("serai server --insecure-no-auth on %s started without a warning:\n%s", listen, log)
	}

	// (b) With keys it starts on every address without the flag, and an
	// unsigned request is refused.
	keys := filepath.Join(dir, "keys")
	if err := os.WriteFile(keys, []byte("AKIDSERAIE2E "+closedSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	listen, local = anyAddr()
	signed := startServerArgs(t, serai, dir, "signed", local, agentEnv,
		"--listen", listen, "--advertise-addr", local, "--sigv4-keys", keys)
	evil := map[string]any{
		"ModelName":        "evil",
		"PrimaryContainer": map[string]any{},
		"Serai":            map[string]any{"Command": "/bin/sh", "Args": []string{"-c", "id > /tmp/owned"}, "Driver": "raw_exec"},
	}
	body, _ := json.Marshal(evil)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+local+"/", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", "SageMaker.CreateModel")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("unsigned CreateModel: %d %s; want 403", resp.StatusCode, answer)
	}
	t.Logf("RESULT unsigned CreateModel: %d %s", resp.StatusCode, answer)

	// (c) Signed by the AWS SDK, with the Serai extension the SDK's shape
	// lacks added to the body before signing: refused by admission.
	sm := sageMakerClient("http://"+local, func(o *sagemaker.Options) {
		o.Credentials = credentials.NewStaticCredentialsProvider("AKIDSERAIE2E", closedSecret, "")
		o.APIOptions = append(o.APIOptions, addSeraiExtension(evil["Serai"]))
	})
	_, err = sm.CreateModel(ctx, &sagemaker.CreateModelInput{ModelName: aws.String("evil"), PrimaryContainer: &smtypes.ContainerDefinition{}})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "ValidationException" ||
		!strings.Contains(ae.ErrorMessage(), "'serai.driver'") || !strings.Contains(ae.ErrorMessage(), "--allow-drivers") {
		t.Fatalf("signed raw_exec CreateModel: %v; want ValidationException naming serai.driver and --allow-drivers", err)
	}
	t.Logf("RESULT signed raw_exec CreateModel (AWS SDK): %s: %s", ae.ErrorCode(), ae.ErrorMessage())

	// The same model in HCL through serai apply, signed.
	spec := filepath.Join(dir, "evil.hcl")
	if err := os.WriteFile(spec, []byte("model \"evil-hcl\" {\n  command = \"/bin/sh\"\n  args    = [\"-c\", \"id\"]\n  driver  = \"raw_exec\"\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	apply := exec.CommandContext(ctx, serai, "apply", spec)
	apply.Env = append(os.Environ(), "SERAI_ADDR=http://"+local, "SERAI_ACCESS_KEY_ID=AKIDSERAIE2E", "SERAI_SECRET_ACCESS_KEY="+closedSecret)
	out, err := apply.CombinedOutput()
	if err == nil || !bytes.Contains(out, []byte("--allow-drivers")) {
		t.Fatalf("serai apply of a raw_exec model: %v; want a refusal naming --allow-drivers\n%s", err, out)
	}

	// Nothing was recorded, so the reconciler has nothing to run.
	pairs, _, err := consul.Client.KV().List(contract.ModelsPrefix, nil)
	if err != nil || len(pairs) != 0 {
		t.Fatalf("Consul KV %s after the refusals: %d keys, %v", contract.ModelsPrefix, len(pairs), err)
	}
	jobs, _, err := nomad.Client.Jobs().List(nil)
	if err != nil || len(jobs) != 0 {
		t.Fatalf("Nomad jobs after the refusals: %d, %v", len(jobs), err)
	}
	signed.stop(t)
}

// closedSecret is the test's SigV4 secret (keys files want 16 characters).
const closedSecret = "closed-by-default-secret"

// addSeraiExtension adds a Serai member to the SDK's serialized JSON
// body, before the SDK signs it.
func addSeraiExtension(ext any) func(*middleware.Stack) error {
	return func(s *middleware.Stack) error {
		return s.Build.Add(middleware.BuildMiddlewareFunc("seraiExtension", func(ctx context.Context, in middleware.BuildInput, next middleware.BuildHandler) (middleware.BuildOutput, middleware.Metadata, error) {
			req, ok := in.Request.(*smithyhttp.Request)
			if !ok {
				return middleware.BuildOutput{}, middleware.Metadata{}, fmt.Errorf("unexpected request type %T", in.Request)
			}
			b, err := io.ReadAll(req.GetStream())
			if err != nil {
				return middleware.BuildOutput{}, middleware.Metadata{}, err
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				return middleware.BuildOutput{}, middleware.Metadata{}, err
			}
			m["Serai"] = ext
			if b, err = json.Marshal(m); err != nil {
				return middleware.BuildOutput{}, middleware.Metadata{}, err
			}
			if req, err = req.SetStream(bytes.NewReader(b)); err != nil {
				return middleware.BuildOutput{}, middleware.Metadata{}, err
			}
			req.ContentLength = int64(len(b))
			in.Request = req
			return next.HandleBuild(ctx, in)
		}), middleware.After)
	}
}

// process is a serai server started with chosen flags.
type process struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
}

// startServerArgs runs `serai server args...` and waits for /ping on
// local; the test's cleanup stops it.
func startServerArgs(t *testing.T, serai, dir, id, local string, env []string, args ...string) *process {
	t.Helper()
	p := &process{logPath: filepath.Join(dir, "server-"+id+".log"), done: make(chan struct{})}
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(serai, append([]string{"server", "--id", id}, args...)...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() { p.stop(t) })
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("serai server %s exited: %s", id, p.log(t))
		default:
		}
		if resp, err := http.Get("http://" + local + "/ping"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("serai server %s did not answer /ping on %s: %s", id, local, p.log(t))
	return nil
}

func (p *process) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("serai server did not stop within 20s of SIGINT")
	}
}

func (p *process) log(t *testing.T) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
