package main

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	textOnce   sync.Once
	textModels [2]*TextModel
	textErr    error
)

// trainedText trains the two example versions once per test binary.
func trainedText(t *testing.T) (v1, v2 *TextModel) {
	t.Helper()
	textOnce.Do(func() {
		b, err := os.ReadFile("../data/opticks.txt")
		if err != nil {
			textErr = err
			return
		}
		for i, order := range []int{1, 2} {
			textModels[i], textErr = TrainText(string(b), "opticks.txt", []string{"v1", "v2"}[i], order)
			if textErr != nil {
				return
			}
		}
	})
	if textErr != nil {
		t.Fatal(textErr)
	}
	return textModels[0], textModels[1]
}

func TestTokenize(t *testing.T) {
	got := strings.Join(Tokenize("Light, (of the Sun's) Rays; re-fracted.\n42"), "|")
	if want := "Light|,|(|of|the|Sun's|)|Rays|;|re-fracted|.|42"; got != want {
		t.Fatalf("got %s", got)
	}
}

// TestTextVersionsDiffer: the trigram version predicts held-out text
// measurably better than the bigram one, and they generate differently.
func TestTextVersionsDiffer(t *testing.T) {
	v1, v2 := trainedText(t)
	t.Logf("RESULT text model held-out perplexity: v1 (bigram) %.1f, v2 (trigram) %.1f", v1.Training.HeldOutPerplex, v2.Training.HeldOutPerplex)
	if !(v2.Training.HeldOutPerplex < v1.Training.HeldOutPerplex*0.99) {
		t.Fatalf("v2 perplexity %.1f not below v1 %.1f", v2.Training.HeldOutPerplex, v1.Training.HeldOutPerplex)
	}
	gen := func(m *TextModel) string {
		var out []string
		m.Generate(Tokenize("The Light of the Sun"), 30, 7, func(tok string) bool { out = append(out, tok); return true })
		return strings.Join(out, " ")
	}
	a, b := gen(v1), gen(v2)
	if len(strings.Fields(a)) != 30 || a == b {
		t.Fatalf("v1 %q\nv2 %q", a, b)
	}
	if gen(v2) != b {
		t.Fatal("same prompt and seed gave different tokens")
	}
}

func TestTextSaveLoad(t *testing.T) {
	_, v2 := trainedText(t)
	dir := t.TempDir()
	if err := v2.Save(dir); err != nil {
		t.Fatal(err)
	}
	m, err := LoadTextModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m.Perplexity(Tokenize("the Rays of Light")) != v2.Perplexity(Tokenize("the Rays of Light")) {
		t.Fatal("loaded model scores differently")
	}
	if f, _ := modelFormatOf(dir); f != textFormat {
		t.Fatalf("format %q", f)
	}
	if _, err := LoadModel(dir); err == nil {
		t.Fatal("a text model loaded as a softmax model")
	}
}

// TestTextServerStreams: tokens leave one chunk at a time, paced by the
// delay, and sessions continue the conversation until closed.
func TestTextServerStreams(t *testing.T) {
	_, v2 := trainedText(t)
	srv := httptest.NewServer(NewTextServer(v2, 20*time.Millisecond, quietLog()).Handler())
	defer srv.Close()
	start := time.Now()
	resp, err := http.Post(srv.URL+"/invocations", "application/json", strings.NewReader(`{"inputs":"The Light","parameters":{"max_new_tokens":10}}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if len(resp.TransferEncoding) == 0 || resp.TransferEncoding[0] != "chunked" || resp.Header.Get(VersionHeader) != "v2" {
		t.Fatalf("transfer encoding %v, version %q", resp.TransferEncoding, resp.Header.Get(VersionHeader))
	}
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadByte(); err != nil {
		t.Fatal(err)
	}
	first := time.Since(start)
	rest, _ := io.ReadAll(br)
	total := time.Since(start)
	if !(first < total/2) || total < 200*time.Millisecond {
		t.Fatalf("first byte after %s, all after %s: not streamed", first, total)
	}
	if n := len(Tokenize(string(rest))); n < 8 {
		t.Fatalf("%d tokens", n)
	}

	post := func(sid, body string) *http.Response {
		req, _ := http.NewRequest("POST", srv.URL+"/invocations", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if sid != "" {
			req.Header.Set(hdrSessionID, sid)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	resp = post(newSession, `{"inputs":"Colours","parameters":{"max_new_tokens":3,"token_delay_ms":1}}`)
	id, exp, ok := strings.Cut(resp.Header.Get(hdrSessionID), "; Expires=")
	if !ok || len(exp) != 20 || !strings.HasPrefix(id, "v2-") {
		t.Fatalf("session header %q", resp.Header.Get(hdrSessionID))
	}
	if r := post(id, `{"inputs":"more","parameters":{"max_new_tokens":3,"token_delay_ms":1}}`); r.StatusCode != 200 {
		t.Fatalf("in session: %d", r.StatusCode)
	}
	if r := post(id, `{"close":true}`); r.StatusCode != 200 || r.Header.Get(hdrClosedSessionID) != id {
		t.Fatalf("close: %d %q", r.StatusCode, r.Header.Get(hdrClosedSessionID))
	}
	if r := post(id, `{"inputs":"more"}`); r.StatusCode != 400 {
		t.Fatalf("closed session answered %d", r.StatusCode)
	}
}
