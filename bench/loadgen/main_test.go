package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testServer: an in-process HTTPS server on 127.0.0.1 with a certificate for each of
// certNames (from a fresh CA, whose PEM file is returned); other SNI names get certNames[0]'s.
func testServer(t *testing.T, certNames []string, h2 bool) (*httptest.Server, string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTemplate := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "loadgen test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	certs := map[string]*tls.Certificate{}
	for i, name := range certNames {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		template := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, template, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		certs[name] = &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	server := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("hello " + r.Host + " over " + r.Proto))
	}))
	server.EnableHTTP2 = h2
	server.TLS = &tls.Config{
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c, ok := certs[hello.ServerName]; ok {
				return c, nil
			}
			return certs[certNames[0]], nil
		},
	}
	if !h2 {
		server.TLS.NextProtos = []string{"http/1.1"}
	}
	server.StartTLS()
	t.Cleanup(server.Close)
	return server, caFile
}

func settings(server *httptest.Server, caFile string, names ...string) Settings {
	return Settings{
		Addr: strings.TrimPrefix(server.URL, "https://"), CAFile: caFile, Order: "random", Seed: 1,
		TLSVersion: "1.3", Mode: "handshake", Path: "/", Concurrency: 2, Connections: 40,
		Timeout: 5 * time.Second, TicketWait: 200 * time.Millisecond, ALPN: []string{}, Names: names, VerifyCache: true, Group: "x25519",
	}
}

func mustRun(t *testing.T, s Settings) *Result {
	t.Helper()
	r, err := run(s)
	if err != nil {
		t.Fatal(err)
	}
	if r.Counts.Attempted != s.Connections {
		t.Fatalf("attempted %d, want %d", r.Counts.Attempted, s.Connections)
	}
	return r
}

func TestFullHandshakesOnly(t *testing.T) {
	server, ca := testServer(t, []string{"a.test", "b.test"}, false)
	for _, version := range []string{"1.3", "1.2"} {
		s := settings(server, ca, "a.test", "b.test")
		s.TLSVersion = version
		r := mustRun(t, s)
		c := r.Counts
		if c.OK != 40 || c.Failed != 0 || c.FullHandshakes != 40 || c.Resumed != 0 || c.TicketsReceived != 0 {
			t.Fatalf("TLS %s: %+v %v", version, c, r.ErrorSamples)
		}
		if r.LatencyMS["handshake"].Count != 40 || r.LatencyMS["connect"].Count != 40 {
			t.Fatalf("latencies %+v", r.LatencyMS)
		}
	}
}

func TestResume(t *testing.T) {
	server, ca := testServer(t, []string{"a.test", "b.test"}, false)
	for _, version := range []string{"1.3", "1.2"} {
		for _, mode := range []string{"handshake", "get"} {
			s := settings(server, ca, "a.test", "b.test")
			s.Resume, s.TLSVersion, s.Mode = true, version, mode
			r := mustRun(t, s)
			c := r.Counts
			// Each worker's first connection per hostname is full, at most 2 x 2.
			if c.OK != 40 || c.Resumed < 36 || c.FullHandshakes+c.Resumed != 40 || c.TicketsReceived == 0 {
				t.Fatalf("TLS %s %s: %+v %v", version, mode, c, r.ErrorSamples)
			}
		}
	}
}

func TestGetHTTP1AndH2(t *testing.T) {
	server, ca := testServer(t, []string{"a.test"}, true)
	for _, alpn := range [][]string{{"h2", "http/1.1"}, {"http/1.1"}, {}} {
		s := settings(server, ca, "a.test")
		s.Mode, s.ALPN = "get", alpn
		r := mustRun(t, s)
		c := r.Counts
		want := "none"
		if len(alpn) > 0 {
			want = alpn[0]
		}
		if c.OK != 40 || c.Status["200"] != 40 || c.ALPN[want] != 40 || c.ResponseBytes == 0 {
			t.Fatalf("ALPN %v: %+v %v", alpn, c, r.ErrorSamples)
		}
	}
}

func TestNon200AndMismatchCounted(t *testing.T) {
	server, ca := testServer(t, []string{"a.test"}, false)
	s := settings(server, ca, "a.test", "other.test") // other.test gets a.test's certificate
	s.Mode, s.Path, s.Order = "get", "/missing", "sequential"
	r := mustRun(t, s)
	c := r.Counts
	if c.Non200 != 40 || c.NameMismatches != 20 || c.VerifyFailures != 0 || c.OK != 0 || c.Failed != 40 {
		t.Fatalf("%+v", c)
	}
}

func TestVerifyFailureCounted(t *testing.T) {
	server, _ := testServer(t, []string{"a.test"}, false)
	_, otherCA := testServer(t, []string{"a.test"}, false)
	r := mustRun(t, settings(server, otherCA, "a.test"))
	if c := r.Counts; c.VerifyFailures != 40 || c.NameMismatches != 0 || c.HandshakeErrors != 0 {
		t.Fatalf("%+v", c)
	}
}

func TestVerifyCacheCounts(t *testing.T) {
	server, ca := testServer(t, []string{"a.test", "b.test"}, false)
	s := settings(server, ca, "a.test", "b.test")
	r := mustRun(t, s)
	v := r.Verification
	// Two different chains: the first one fully verified, the second leaf against the known
	// intermediate... here the test CA signs leaves directly, so both are full verifications.
	if v.Verifications+v.AnchorHits+v.CacheHits != 40 || v.CacheHits < 30 {
		t.Fatalf("%+v", v)
	}
	s.VerifyCache = false
	r = mustRun(t, s)
	if v := r.Verification; v.Verifications != 40 || v.CacheHits != 0 {
		t.Fatalf("%+v", v)
	}
}

func TestRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"192.0.2.1:443", "example.com:443", "localhost:443", "0.0.0.0:443"} {
		if err := checkLoopback(addr); err == nil {
			t.Errorf("%s accepted", addr)
		}
	}
	for _, addr := range []string{"127.0.0.1:8443", "[::1]:8443"} {
		if err := checkLoopback(addr); err != nil {
			t.Errorf("%s: %v", addr, err)
		}
	}
}
