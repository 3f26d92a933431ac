package sigv4

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// FuzzVerifier feeds the verifier what a network client controls: the
// Authorization header, X-Amz-Date, the path and the body. Nothing may
// panic, and since no input is signed with the key's secret, nothing may
// pass: a Match here would be a forgery.
func FuzzVerifier(f *testing.F) {
	const akid, secret = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
	now := time.Date(2015, 8, 30, 12, 36, 0, 0, time.UTC)
	f.Add(Algorithm+" Credential="+akid+"/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
		"20150830T123600Z", "/", "")
	f.Add(Algorithm+" Credential="+akid+"/20150830/us-east-1/service/aws4_request,SignedHeaders=host;x-amz-date;x-amz-content-sha256,Signature=00",
		"20150830T123600Z", "/a/%2F/..", "body")
	f.Add(Algorithm+" Credential=/, SignedHeaders=, Signature=", "", "//", "\x00")
	f.Add("AWS4-HMAC-SHA256 Credential="+akid+"/20150830/us-east-1/service/aws4_request, Credential=x, SignedHeaders=host, Signature=aa", "20150830T123600Z", "/", "")
	v, err := NewVerifier(Config{Service: "service", Region: "us-east-1", Now: func() time.Time { return now }}, map[string]string{akid: secret})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, authz, date, path, body string) {
		r, err := http.NewRequest(http.MethodPost, "http://example.amazonaws.com/", strings.NewReader(body))
		if err != nil {
			t.Skip()
		}
		// As a server sees it: the request line's target, parsed.
		r.RequestURI = path
		if u, err := url.ParseRequestURI(path); err == nil {
			r.URL.Path, r.URL.RawPath, r.URL.RawQuery = u.Path, u.RawPath, u.RawQuery
		}
		r.Header.Set("Authorization", authz)
		r.Header.Set("X-Amz-Date", date)
		s, e := v.Precheck(r)
		if e != nil {
			if e.Code == "" || e.Message == "" || strings.Contains(e.Message, secret) || strings.Contains(e.Reason, secret) {
				t.Fatalf("refusal without code or message, or quoting the secret: %+v", e)
			}
			return
		}
		if e := v.Verify(context.Background(), r, s, []byte(body)); e == nil {
			t.Fatalf("unsigned input verified: Authorization %q, X-Amz-Date %q, path %q, body %q", authz, date, path, body)
		}
	})
}
