package router

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/seraihq/serai/internal/testagents"
)

// TestAWSCLI invokes through the router with the real AWS CLI
// (sagemaker-runtime invoke-endpoint, and invoke-endpoint-with-response-stream
// where the CLI has it):
// botocore signs with SigV4, which the router verifies, and parses the
// answer, the invoked variant, the event stream and the router's errors.
func TestAWSCLI(t *testing.T) {
	const akid, secret = "AKIASERAIROUTERCLI01", "cm91dGVyLWNsaS1zZWNyZXQta2V5LTAwMDE"
	a := model(t, "a", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Header.Get("X-Amzn-SageMaker-Custom-Attributes") != "k=v" {
			http.Error(w, "custom attributes lost", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		flusher := w.(http.Flusher)
		w.Write([]byte(`{"echo":`))
		flusher.Flush()
		w.Write(append(b, '}'))
	})
	e := newEnv(t, Config{SigV4Keys: map[string]string{akid: secret}})
	e.rt.SetRoutes("demo", oneGen("demo", "a", 1))
	e.rt.SetInstances("demo", []Instance{inst("a1", addrOf(a), "a", 1)})
	aws := testagents.AWSCLI(t, e.srv.URL, akid, secret, "eu-west-1")
	dir := t.TempDir()
	// Bodies go as fileb:// so AWS CLI v1 and v2 read them alike.
	body := func(s string) string {
		p := filepath.Join(dir, "body-"+s)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return "fileb://" + p
	}

	out := filepath.Join(dir, "answer.json")
	var meta struct{ ContentType, InvokedProductionVariant string }
	aws.OK(&meta, "sagemaker-runtime", "invoke-endpoint", "--endpoint-name", "demo",
		"--content-type", "application/json", "--custom-attributes", "k=v", "--body", body("[1,2]"), out)
	if b, _ := os.ReadFile(out); string(b) != `{"echo":[1,2]}` || meta.InvokedProductionVariant != "a" || meta.ContentType != "application/json" {
		t.Errorf("invoke-endpoint: answer %q, %+v", b, meta)
	}

	// invoke-endpoint-with-response-stream came to the CLI in 2023; older
	// ones (v1 and Debian's 2.9) do not have it.
	stream := filepath.Join(dir, "stream.out")
	code, text := aws.Run("sagemaker-runtime", "invoke-endpoint-with-response-stream", "--endpoint-name", "demo",
		"--content-type", "application/json", "--custom-attributes", "k=v", "--body", body("[3]"), stream)
	switch {
	case code != 0 && strings.Contains(text, "Invalid choice"):
		t.Logf("this AWS CLI has no invoke-endpoint-with-response-stream; streaming is covered by the Go SDK tests")
	case code != 0:
		t.Errorf("invoke-endpoint-with-response-stream: exit %d: %s", code, text)
	default:
		if b, _ := os.ReadFile(stream); !strings.Contains(string(b), "echo") {
			t.Errorf("streamed answer %q", b)
		}
	}

	if code, text := aws.Run("sagemaker-runtime", "invoke-endpoint", "--endpoint-name", "ghost",
		"--body", body("x"), out); code == 0 || !strings.Contains(text, "(ValidationError)") || !strings.Contains(text, "Endpoint ghost") {
		t.Errorf("unknown endpoint: exit %d: %s", code, text)
	}
	bad := testagents.AWSCLI(t, e.srv.URL, akid, secret+"x", "eu-west-1")
	if code, text := bad.Run("sagemaker-runtime", "invoke-endpoint", "--endpoint-name", "demo",
		"--body", body("x"), out); code == 0 || !strings.Contains(text, "InvalidSignatureException") {
		t.Errorf("wrong secret: exit %d: %s", code, text)
	}
}
