// Package devstore is `serai dev`'s artifact store: an S3-protocol server
// (gofakes3) on loopback whose objects live in one bolt file that survives
// restarts, with generated access keys kept beside it (mode 0600) and
// AWS Signature Version 4 required on every request, so the fetch task
// authenticates with the keys Vault hands it exactly as with a real store.
//
// It is for one developer's machine; it owns the store only and knows
// nothing about Vault or Nomad.
package devstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3bolt"
	bolt "go.etcd.io/bbolt"

	"github.com/seraihq/serai/internal/sigv4"
)

// Keys are the store's credentials.
type Keys struct {
	AccessKeyID     string `json:"access_key_id"`
	SecretAccessKey string `json:"secret_access_key"`
}

// Store is the running store.
type Store struct {
	URL  string // "http://127.0.0.1:port"
	Keys Keys

	backend *s3bolt.Backend
	db      *bolt.DB
	srv     *http.Server
	done    chan struct{}
}

// Open opens (or creates) the store in dir — dir/store.db for the
// objects, dir/store-keys.json for the keys — and serves it on listen
// (a loopback address).
func Open(dir, listen string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	keys, err := loadOrCreateKeys(filepath.Join(dir, "store-keys.json"))
	if err != nil {
		return nil, err
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("store address %q: %w", listen, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("store address %q: must be a loopback IP", listen)
	}
	dbPath := filepath.Join(dir, "store.db")
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w (is another serai dev using it?)", dbPath, err)
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		db.Close()
		return nil, err
	}
	backend := s3bolt.New(db)
	s := &Store{URL: "http://" + l.Addr().String(), Keys: keys, backend: backend, db: db, done: make(chan struct{})}
	inner := gofakes3.New(backend, gofakes3.WithAutoBucket(false)).Server()
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if code, msg := s.checkAuth(r); code != "" {
			writeError(w, http.StatusForbidden, code, msg)
			return
		}
		inner.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(l)
	}()
	return s, nil
}

// Close stops serving and closes the bolt file.
func (s *Store) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	<-s.done
	return errors.Join(err, s.db.Close())
}

// EnsureBucket creates bucket unless it exists.
func (s *Store) EnsureBucket(bucket string) error {
	ok, err := s.backend.BucketExists(bucket)
	if err != nil || ok {
		return err
	}
	return s.backend.CreateBucket(bucket)
}

// Put stores an object directly in the backend.
func (s *Store) Put(bucket, key string, r io.Reader, size int64) error {
	_, err := s.backend.PutObject(bucket, key, map[string]string{"Last-Modified": time.Now().UTC().Format(http.TimeFormat)}, r, size, nil)
	return err
}

func loadOrCreateKeys(path string) (Keys, error) {
	var k Keys
	if b, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(b, &k); err != nil || k.AccessKeyID == "" || k.SecretAccessKey == "" {
			return k, fmt.Errorf("%s: not a key file (%v); remove it to generate new keys", path, err)
		}
		return k, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return k, err
	}
	id, secret := make([]byte, 10), make([]byte, 30)
	if _, err := rand.Read(id); err != nil {
		return k, err
	}
	if _, err := rand.Read(secret); err != nil {
		return k, err
	}
	k = Keys{AccessKeyID: "SERAIDEV" + hex.EncodeToString(id)[:12], SecretAccessKey: hex.EncodeToString(secret)}
	b, _ := json.Marshal(k)
	return k, os.WriteFile(path, b, 0o600)
}

// checkAuth verifies SigV4 by signing the request again with the known
// secret (internal/sigv4, the SDK's own signer as reference).
func (s *Store) checkAuth(r *http.Request) (code, msg string) {
	a, err := sigv4.ParseAuthorization(r.Header.Get("Authorization"))
	if err != nil {
		return "AccessDenied", "a SigV4-signed request is required"
	}
	if a.AccessKeyID != s.Keys.AccessKeyID {
		return "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."
	}
	when, err := sigv4.SigningTime(r)
	if err != nil {
		return "AccessDenied", err.Error()
	}
	creds := aws.Credentials{SecretAccessKey: s.Keys.SecretAccessKey, SessionToken: r.Header.Get("X-Amz-Security-Token")}
	res, err := sigv4.Verify(r.Context(), signer, r, a, creds, r.Header.Get("X-Amz-Content-Sha256"), when)
	if err != nil || res != sigv4.Match {
		return "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided."
	}
	return "", ""
}

// signer signs as S3 clients do: S3 paths are not escaped twice.
var signer = v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true })

func writeError(w http.ResponseWriter, status int, code, msg string) {
	type errorXML struct {
		XMLName xml.Name `xml:"Error"`
		Code    string
		Message string
	}
	b, _ := xml.Marshal(errorXML{Code: code, Message: msg})
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, "%s%s", xml.Header, b)
}
