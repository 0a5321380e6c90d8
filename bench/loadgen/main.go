// Command loadgen opens new TCP connections to a TLS server on the loopback interface, does a
// full TLS handshake on each (SNI drawn from a list of hostnames, the certificate verified
// against a CA file and checked against the SNI name) and optionally one "GET /", and prints
// what happened as JSON on stdout: counts, latency percentiles, its own CPU time, the settings.
//
// It is jobhost's load generator for bench/handshake.py (see bench/README.md): written in Go
// (standard library only) so that it costs less CPU per connection than the servers it
// measures. Failures (refused connections, failed handshakes, certificates that do not verify
// or do not match the name, non-200 responses) are counted, never fatal.
//
//	loadgen -addr 127.0.0.1:8443 -ca root.pem -hostnames names.txt -connections 1000 -concurrency 2
//	loadgen -addr 127.0.0.1:8443 -ca root.pem -pattern 'h%04d.bench.test' -n 1000 -duration 10s -mode get
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Settings is everything that decides what a run does; it is echoed in the output.
type Settings struct {
	Addr          string        `json:"addr"`
	CAFile        string        `json:"ca_file"`
	HostnamesFile string        `json:"hostnames_file,omitempty"`
	Pattern       string        `json:"pattern,omitempty"`
	Order         string        `json:"order"`
	Seed          int64         `json:"seed"`
	TLSVersion    string        `json:"tls_version"`
	Mode          string        `json:"mode"`
	Path          string        `json:"path"`
	Concurrency   int           `json:"concurrency"`
	Connections   int64         `json:"connections"`
	Duration      time.Duration `json:"-"`
	Timeout       time.Duration `json:"-"`
	Resume        bool          `json:"resume"`
	TicketWait    time.Duration `json:"-"`
	ALPN          []string      `json:"alpn"`
	VerifyCache   bool          `json:"verify_cache"`
	Group         string        `json:"group"`
	Sources       int           `json:"sources"`

	// Filled in by run: the hostnames themselves (only their count is printed).
	Names []string `json:"-"`
}

// Counts are per run (and per worker while running).
type Counts struct {
	Attempted       int64            `json:"attempted"`
	OK              int64            `json:"ok"`
	Failed          int64            `json:"failed"`
	ConnectErrors   int64            `json:"connect_errors"`
	HandshakeErrors int64            `json:"handshake_errors"`
	VerifyFailures  int64            `json:"verify_failures"`
	NameMismatches  int64            `json:"name_mismatches"`
	HTTPErrors      int64            `json:"http_errors"`
	Non200          int64            `json:"non_200"`
	UncleanCloses   int64            `json:"unclean_closes"`
	FullHandshakes  int64            `json:"full_handshakes"`
	Resumed         int64            `json:"resumed"`
	TicketsReceived int64            `json:"session_tickets_received"`
	ResponseBytes   int64            `json:"response_bytes"`
	Status          map[string]int64 `json:"http_status"`
	TLSVersions     map[string]int64 `json:"tls_versions"`
	ALPN            map[string]int64 `json:"alpn_negotiated"`
}

func newCounts() Counts {
	return Counts{Status: map[string]int64{}, TLSVersions: map[string]int64{}, ALPN: map[string]int64{}}
}

func (c *Counts) add(o *Counts) {
	c.Attempted += o.Attempted
	c.OK += o.OK
	c.Failed += o.Failed
	c.ConnectErrors += o.ConnectErrors
	c.HandshakeErrors += o.HandshakeErrors
	c.VerifyFailures += o.VerifyFailures
	c.NameMismatches += o.NameMismatches
	c.HTTPErrors += o.HTTPErrors
	c.Non200 += o.Non200
	c.UncleanCloses += o.UncleanCloses
	c.FullHandshakes += o.FullHandshakes
	c.Resumed += o.Resumed
	c.TicketsReceived += o.TicketsReceived
	c.ResponseBytes += o.ResponseBytes
	for _, pair := range [][2]map[string]int64{{c.Status, o.Status}, {c.TLSVersions, o.TLSVersions}, {c.ALPN, o.ALPN}} {
		for k, v := range pair[1] {
			pair[0][k] += v
		}
	}
}

// Latency is a summary of durations, in milliseconds.
type Latency struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
	Mean  float64 `json:"mean"`
}

// percentile: linear interpolation between closest ranks (bench/_harness.py's definition).
func percentile(sorted []int64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	rank := float64(len(sorted)-1) * p / 100
	low := int(math.Floor(rank))
	high := low + 1
	if high >= len(sorted) {
		high = len(sorted) - 1
	}
	return float64(sorted[low]) + float64(sorted[high]-sorted[low])*(rank-float64(low))
}

func summarise(ns []int64) *Latency {
	if len(ns) == 0 {
		return nil
	}
	sort.Slice(ns, func(i, j int) bool { return ns[i] < ns[j] })
	var sum float64
	for _, v := range ns {
		sum += float64(v)
	}
	ms := func(v float64) float64 { return math.Round(v/1e3) / 1e3 } // ns -> ms, 3 decimals
	return &Latency{
		Count: len(ns), P50: ms(percentile(ns, 50)), P90: ms(percentile(ns, 90)), P99: ms(percentile(ns, 99)),
		Max: ms(float64(ns[len(ns)-1])), Mean: ms(sum / float64(len(ns))),
	}
}

// CPU is this process's user + system time over the measured run.
type CPU struct {
	Source             string   `json:"source"`
	UserS              float64  `json:"user_s"`
	SystemS            float64  `json:"system_s"`
	TotalS             float64  `json:"total_s"`
	USPerConnection    *float64 `json:"us_per_connection"`
	ProcSelfStatTotalS *float64 `json:"proc_self_stat_total_s"`
}

// Result is what is printed.
type Result struct {
	Program      string              `json:"program"`
	GoVersion    string              `json:"go_version"`
	GOMAXPROCS   int                 `json:"gomaxprocs"`
	Settings     map[string]any      `json:"settings"`
	Counts       Counts              `json:"counts"`
	LatencyMS    map[string]*Latency `json:"latency_ms"`
	ElapsedS     float64             `json:"elapsed_s"`
	PerSecond    float64             `json:"connections_per_s"`
	CPU          CPU                 `json:"cpu"`
	Verification VerifyStats         `json:"verification"`
	GOGC         int                 `json:"gogc"`
	Interrupted  bool                `json:"interrupted"`
	ErrorSamples []string            `json:"error_samples"`
}

type generator struct {
	s        Settings
	verifier *chainVerifier
	version  uint16
	curves   []tls.CurveID
	dialer   net.Dialer
	next     atomic.Int64
	stop     atomic.Bool
	end      time.Time // zero: no duration limit
}

type worker struct {
	g       *generator
	rng     *rand.Rand
	configs []*tls.Config // one per hostname, made on first use
	cache   tls.ClientSessionCache
	dialer  *net.Dialer // this client's own source address with -sources, else the generator's
	counts  Counts
	samples []string

	connectNS, handshakeNS, requestNS []int64

	// State of the connection in progress (a worker does one at a time).
	checked   bool
	verifyErr error
	nameErr   error
	waiting   net.Conn // while waiting for a TLS 1.3 session ticket
	br        *bufio.Reader
	h2        *http.Transport
	h2conn    chan net.Conn
}

// ticketCache is the worker's session cache; it counts tickets and ends a wait for one.
type ticketCache struct {
	tls.ClientSessionCache
	w *worker
}

func (c *ticketCache) Put(key string, s *tls.ClientSessionState) {
	c.ClientSessionCache.Put(key, s)
	if s != nil {
		c.w.counts.TicketsReceived++
		if c.w.waiting != nil {
			_ = c.w.waiting.SetReadDeadline(time.Now())
		}
	}
}

func (w *worker) sample(kind string, name string, err error) {
	if len(w.samples) < 5 {
		w.samples = append(w.samples, fmt.Sprintf("%s (%s): %v", kind, name, err))
	}
}

func (w *worker) config(i int) *tls.Config {
	if c := w.configs[i]; c != nil {
		return c
	}
	g := w.g
	c := &tls.Config{
		ServerName: g.s.Names[i],
		// Verified by hand in VerifyConnection, so that a failure is counted instead of
		// aborting the handshake; the work done is the same as Go's own verification.
		InsecureSkipVerify: true,
		VerifyConnection:   w.verify,
		MinVersion:         g.version,
		MaxVersion:         g.version,
		NextProtos:         g.s.ALPN,
		CurvePreferences:   g.curves,
	}
	if w.cache != nil {
		c.ClientSessionCache = w.cache
	} else {
		c.SessionTicketsDisabled = true
	}
	w.configs[i] = c
	return c
}

func (w *worker) verify(cs tls.ConnectionState) error {
	w.checked = true
	if len(cs.PeerCertificates) == 0 {
		w.verifyErr = errors.New("no server certificate")
		w.nameErr = w.verifyErr
		return nil
	}
	w.verifyErr = w.g.verifier.verify(cs.PeerCertificates)
	w.nameErr = cs.PeerCertificates[0].VerifyHostname(cs.ServerName)
	return nil
}

// chainVerifier checks server certificate chains against the CA file (x509.Verify, server
// auth). With caching on (the default), a chain byte-identical to one already verified, and
// still within every certificate's validity period, is not verified again; and an intermediate
// that was verified to chain to the CA becomes the anchor for the next leaves it signed (one
// signature check per new leaf instead of two). crypto/tls checks the server's handshake
// signature (CertificateVerify) on every connection either way, and the name is checked
// against the SNI on every connection.
type chainVerifier struct {
	roots   *x509.CertPool
	caching bool
	mu      sync.Mutex
	chains  map[[32]byte]verdict
	anchors map[[32]byte]*x509.CertPool // verified intermediates, by SHA-256 of their DER

	verifications, cacheHits, anchorHits atomic.Int64
}

type verdict struct {
	err                 error
	notBefore, notAfter time.Time
}

// VerifyStats is what the verifier did, for the output.
type VerifyStats struct {
	Caching       bool  `json:"caching"`
	Verifications int64 `json:"full_chain_verifications"`
	AnchorHits    int64 `json:"leaf_verified_against_known_intermediate"`
	CacheHits     int64 `json:"identical_chain_cache_hits"`
}

func (v *chainVerifier) full(certs []*x509.Certificate) error {
	v.verifications.Add(1)
	intermediates := x509.NewCertPool()
	for _, c := range certs[1:] {
		intermediates.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: v.roots, Intermediates: intermediates})
	return err
}

func (v *chainVerifier) verify(certs []*x509.Certificate) error {
	if !v.caching {
		return v.full(certs)
	}
	h := sha256.New()
	for _, c := range certs {
		var size [4]byte
		binary.BigEndian.PutUint32(size[:], uint32(len(c.Raw)))
		h.Write(size[:])
		h.Write(c.Raw)
	}
	var key [32]byte
	h.Sum(key[:0])
	now := time.Now()
	v.mu.Lock()
	cached, found := v.chains[key]
	v.mu.Unlock()
	if found && !now.Before(cached.notBefore) && now.Before(cached.notAfter) {
		v.cacheHits.Add(1)
		return cached.err
	}
	var err error
	verified := false
	var anchorKey [32]byte
	if len(certs) == 2 {
		anchorKey = sha256.Sum256(certs[1].Raw)
		v.mu.Lock()
		anchor := v.anchors[anchorKey]
		v.mu.Unlock()
		if anchor != nil {
			if _, err = certs[0].Verify(x509.VerifyOptions{Roots: anchor}); err == nil {
				v.anchorHits.Add(1)
				verified = true
			}
		}
	}
	if !verified {
		err = v.full(certs)
		if err == nil && len(certs) == 2 {
			anchor := x509.NewCertPool()
			anchor.AddCert(certs[1])
			v.mu.Lock()
			v.anchors[anchorKey] = anchor
			v.mu.Unlock()
		}
	}
	window := verdict{err: err, notBefore: certs[0].NotBefore, notAfter: certs[0].NotAfter}
	for _, c := range certs[1:] {
		if c.NotBefore.After(window.notBefore) {
			window.notBefore = c.NotBefore
		}
		if c.NotAfter.Before(window.notAfter) {
			window.notAfter = c.NotAfter
		}
	}
	v.mu.Lock()
	v.chains[key] = window
	v.mu.Unlock()
	return err
}

func versionName(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "TLSv1.3"
	case tls.VersionTLS12:
		return "TLSv1.2"
	}
	return fmt.Sprintf("0x%04x", v)
}

func (w *worker) pick(index int64) int {
	if w.g.s.Order == "sequential" {
		return int(index % int64(len(w.g.s.Names)))
	}
	return w.rng.Intn(len(w.g.s.Names))
}

func (w *worker) run() {
	g := w.g
	for !g.stop.Load() {
		index := g.next.Add(1) - 1
		if g.s.Connections > 0 && index >= g.s.Connections {
			return
		}
		if !g.end.IsZero() && !time.Now().Before(g.end) {
			return
		}
		w.one(w.pick(index))
	}
}

// one makes one connection to hostname number i and counts what happened.
func (w *worker) one(i int) {
	g := w.g
	name := g.s.Names[i]
	w.counts.Attempted++
	ok := false
	defer func() {
		if ok {
			w.counts.OK++
		} else {
			w.counts.Failed++
		}
	}()

	start := time.Now()
	raw, err := w.dialer.Dial("tcp", g.s.Addr)
	if err != nil {
		w.counts.ConnectErrors++
		w.sample("connect", name, err)
		return
	}
	w.connectNS = append(w.connectNS, int64(time.Since(start)))
	// Closed without a TLS close_notify, like bench/handshake.py's Python client.
	defer raw.Close()
	_ = raw.SetDeadline(start.Add(g.s.Timeout))

	w.checked, w.verifyErr, w.nameErr = false, nil, nil
	tc := tls.Client(raw, w.config(i))
	handshakeStart := time.Now()
	if err := tc.Handshake(); err != nil {
		w.counts.HandshakeErrors++
		w.sample("handshake", name, err)
		return
	}
	w.handshakeNS = append(w.handshakeNS, int64(time.Since(handshakeStart)))
	cs := tc.ConnectionState()
	w.counts.TLSVersions[versionName(cs.Version)]++
	alpn := cs.NegotiatedProtocol
	if alpn == "" {
		alpn = "none"
	}
	w.counts.ALPN[alpn]++
	if cs.DidResume {
		w.counts.Resumed++
	} else {
		w.counts.FullHandshakes++
	}
	good := true
	if !w.checked {
		w.verifyErr = errors.New("certificate was not checked")
	}
	if w.verifyErr != nil {
		w.counts.VerifyFailures++
		w.sample("verify", name, w.verifyErr)
		good = false
	}
	if w.nameErr != nil {
		w.counts.NameMismatches++
		w.sample("name", name, w.nameErr)
		good = false
	}

	switch {
	case g.s.Mode == "get":
		requestStart := time.Now()
		var status int
		var n int64
		var err, closeErr error
		if cs.NegotiatedProtocol == "h2" {
			status, n, err = w.getH2(tc, name)
		} else {
			status, n, err, closeErr = w.getH1(tc, name)
		}
		w.counts.ResponseBytes += n
		if err != nil {
			w.counts.HTTPErrors++
			w.sample("http", name, err)
			return
		}
		w.requestNS = append(w.requestNS, int64(time.Since(requestStart)))
		w.counts.Status[strconv.Itoa(status)]++
		if status != 200 {
			w.counts.Non200++
			w.sample("http", name, fmt.Errorf("status %d", status))
			good = false
		}
		if closeErr != nil {
			w.counts.UncleanCloses++ // counted, not a failure: the whole response had arrived
		}
	case g.s.Resume && cs.Version == tls.VersionTLS13:
		// A TLS 1.3 server sends its session tickets after the handshake: read until the
		// first one arrives (the cache's Put ends the wait) or TicketWait passes.
		w.waiting = raw
		_ = raw.SetReadDeadline(time.Now().Add(g.s.TicketWait))
		var b [1]byte
		_, _ = tc.Read(b[:])
		w.waiting = nil
	}
	ok = good
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// getH1 sends "GET path" with Connection: close, reads the whole response and then the
// connection to its end. closeErr is an error after the complete response.
func (w *worker) getH1(tc *tls.Conn, name string) (status int, n int64, err error, closeErr error) {
	request := "GET " + w.g.s.Path + " HTTP/1.1\r\nHost: " + name + "\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(tc, request); err != nil {
		return 0, 0, err, nil
	}
	counter := &countingReader{r: tc}
	if w.br == nil {
		w.br = bufio.NewReaderSize(counter, 32<<10)
	} else {
		w.br.Reset(counter)
	}
	resp, err := http.ReadResponse(w.br, nil)
	if err != nil {
		return 0, counter.n, err, nil
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return resp.StatusCode, counter.n, err, nil
	}
	_, closeErr = io.Copy(io.Discard, w.br)
	return resp.StatusCode, counter.n, nil, closeErr
}

// getH2 does the GET over HTTP/2 on the already established connection (net/http's own
// HTTP/2 client, handed the connection through DialTLSContext; one request per connection).
func (w *worker) getH2(tc *tls.Conn, name string) (int, int64, error) {
	if w.h2 == nil {
		w.h2conn = make(chan net.Conn, 1)
		w.h2 = &http.Transport{
			ForceAttemptHTTP2: true,
			DisableKeepAlives: true,
			DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				select {
				case c := <-w.h2conn:
					return c, nil
				default:
					return nil, errors.New("loadgen: no prepared connection")
				}
			},
		}
	}
	w.h2conn <- tc
	defer func() {
		select {
		case <-w.h2conn:
		default:
		}
		w.h2.CloseIdleConnections()
	}()
	_, port, _ := net.SplitHostPort(w.g.s.Addr)
	req, err := http.NewRequest("GET", "https://"+net.JoinHostPort(name, port)+w.g.s.Path, nil)
	if err != nil {
		return 0, 0, err
	}
	req.Host = name
	resp, err := w.h2.RoundTrip(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		return 0, 0, fmt.Errorf("expected HTTP/2, got %s", resp.Proto)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, n, err
}

func rusage() (user, system float64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return math.NaN(), math.NaN()
	}
	return float64(ru.Utime.Sec) + float64(ru.Utime.Usec)/1e6, float64(ru.Stime.Sec) + float64(ru.Stime.Usec)/1e6
}

// procSelfStat: utime + stime of all threads from /proc/self/stat (clock ticks of 1/100 s).
func procSelfStat() *float64 {
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return nil
	}
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return nil
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return nil
	}
	v := float64(utime+stime) / 100
	return &v
}

// checkLoopback refuses any address that is not an IP literal on the loopback interface.
func checkLoopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-addr %q: %v", addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return fmt.Errorf("-addr %q: bad port", addr)
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-addr %q: refusing a non-loopback address (only 127.0.0.0/8 and ::1, as IP literals)", addr)
	}
	return nil
}

func loadNames(s *Settings, n int) error {
	switch {
	case s.HostnamesFile != "" && s.Pattern != "":
		return errors.New("give -hostnames FILE or -pattern PATTERN -n N, not both")
	case s.HostnamesFile != "":
		data, err := os.ReadFile(s.HostnamesFile)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSpace(line)
			if line != "" && !strings.HasPrefix(line, "#") {
				s.Names = append(s.Names, line)
			}
		}
	case s.Pattern != "":
		if n <= 0 {
			return errors.New("-pattern needs -n N (N > 0)")
		}
		for i := 1; i <= n; i++ {
			name := fmt.Sprintf(s.Pattern, i)
			if strings.Contains(name, "%!") {
				return fmt.Errorf("-pattern %q must hold exactly one integer verb such as %%d or %%04d", s.Pattern)
			}
			s.Names = append(s.Names, name)
		}
	default:
		return errors.New("give -hostnames FILE or -pattern PATTERN -n N")
	}
	if len(s.Names) == 0 {
		return errors.New("no hostnames")
	}
	return nil
}

func run(s Settings) (*Result, error) {
	if err := checkLoopback(s.Addr); err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(s.CAFile)
	if err != nil {
		return nil, fmt.Errorf("-ca: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("-ca %s: no PEM certificate", s.CAFile)
	}
	verifier := &chainVerifier{roots: roots, caching: s.VerifyCache, chains: map[[32]byte]verdict{},
		anchors: map[[32]byte]*x509.CertPool{}}
	g := &generator{s: s, verifier: verifier, dialer: net.Dialer{Timeout: s.Timeout}}
	switch s.TLSVersion {
	case "1.3":
		g.version = tls.VersionTLS13
	case "1.2":
		g.version = tls.VersionTLS12
	default:
		return nil, fmt.Errorf("-tls %q: expected 1.3 or 1.2", s.TLSVersion)
	}
	switch s.Group {
	case "x25519":
		// The key share is X25519 only (crypto/tls sends one for the first group); P-256 is
		// listed too because in TLS 1.2 the groups also say which ECDSA certificates we accept.
		g.curves = []tls.CurveID{tls.X25519, tls.CurveP256}
	case "p256":
		g.curves = []tls.CurveID{tls.CurveP256}
	default:
		return nil, fmt.Errorf("-group %q: expected x25519 or p256", s.Group)
	}
	if s.Mode != "handshake" && s.Mode != "get" {
		return nil, fmt.Errorf("-mode %q: expected handshake or get", s.Mode)
	}
	if s.Order != "random" && s.Order != "sequential" {
		return nil, fmt.Errorf("-order %q: expected random or sequential", s.Order)
	}
	if s.Sources < 0 || s.Sources > 250 {
		return nil, fmt.Errorf("-sources %d: expected 0-250", s.Sources)
	}
	if s.Concurrency < 1 {
		return nil, errors.New("-concurrency must be at least 1")
	}
	if s.Connections <= 0 && s.Duration <= 0 {
		return nil, errors.New("give -connections N or -duration D (or both: whichever comes first)")
	}

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(signals)
	go func() {
		if _, ok := <-signals; ok {
			g.stop.Store(true) // finish the connections in progress, then report
		}
	}()

	workers := make([]*worker, s.Concurrency)
	for k := range workers {
		w := &worker{g: g, rng: rand.New(rand.NewSource(s.Seed + int64(k))), configs: make([]*tls.Config, len(s.Names)),
			counts: newCounts(), dialer: &g.dialer}
		if s.Sources > 0 {
			// Client k connects from 127.0.0.(2 + k mod N): N visitors' addresses, as a server
			// whose workers are chosen by client address sees real traffic.
			source := net.IPv4(127, 0, 0, byte(2+k%s.Sources))
			w.dialer = &net.Dialer{Timeout: s.Timeout, LocalAddr: &net.TCPAddr{IP: source}}
		}
		if s.Resume {
			w.cache = &ticketCache{tls.NewLRUClientSessionCache(len(s.Names)), w}
		}
		workers[k] = w
	}

	userBefore, systemBefore := rusage()
	statBefore := procSelfStat()
	started := time.Now()
	if s.Duration > 0 {
		g.end = started.Add(s.Duration)
	}
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func(w *worker) {
			defer wg.Done()
			w.run()
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(started).Seconds()
	userAfter, systemAfter := rusage()
	statAfter := procSelfStat()

	result := &Result{
		Program: "jobhost bench/loadgen", GoVersion: runtime.Version(), GOMAXPROCS: runtime.GOMAXPROCS(0),
		Counts: newCounts(), LatencyMS: map[string]*Latency{}, ElapsedS: elapsed, Interrupted: g.stop.Load(),
		ErrorSamples: []string{},
	}
	var connectNS, handshakeNS, requestNS []int64
	for _, w := range workers {
		result.Counts.add(&w.counts)
		connectNS = append(connectNS, w.connectNS...)
		handshakeNS = append(handshakeNS, w.handshakeNS...)
		requestNS = append(requestNS, w.requestNS...)
		for _, sample := range w.samples {
			if len(result.ErrorSamples) < 10 {
				result.ErrorSamples = append(result.ErrorSamples, sample)
			}
		}
	}
	result.LatencyMS["connect"] = summarise(connectNS)
	result.LatencyMS["handshake"] = summarise(handshakeNS)
	if s.Mode == "get" {
		result.LatencyMS["request"] = summarise(requestNS)
	}
	if elapsed > 0 {
		result.PerSecond = float64(result.Counts.Attempted) / elapsed
	}
	cpu := CPU{Source: "getrusage(RUSAGE_SELF), all threads, from the first connection to the last",
		UserS: userAfter - userBefore, SystemS: systemAfter - systemBefore}
	cpu.TotalS = cpu.UserS + cpu.SystemS
	if result.Counts.Attempted > 0 {
		v := cpu.TotalS / float64(result.Counts.Attempted) * 1e6
		cpu.USPerConnection = &v
	}
	if statBefore != nil && statAfter != nil {
		v := *statAfter - *statBefore
		cpu.ProcSelfStatTotalS = &v
	}
	result.CPU = cpu
	result.Verification = VerifyStats{Caching: s.VerifyCache, Verifications: verifier.verifications.Load(),
		AnchorHits: verifier.anchorHits.Load(), CacheHits: verifier.cacheHits.Load()}
	result.GOGC = gogc
	result.Settings = map[string]any{
		"addr": s.Addr, "ca_file": s.CAFile, "hostnames_file": s.HostnamesFile, "pattern": s.Pattern,
		"hostnames": len(s.Names), "first_hostname": s.Names[0], "order": s.Order, "seed": s.Seed,
		"tls_version": s.TLSVersion, "mode": s.Mode, "path": s.Path, "concurrency": s.Concurrency,
		"connections": s.Connections, "duration_s": s.Duration.Seconds(), "timeout_s": s.Timeout.Seconds(),
		"resume": s.Resume, "verify_cache": s.VerifyCache, "group": s.Group, "ticket_wait_s": s.TicketWait.Seconds(), "alpn": s.ALPN,
		"session_cache": map[bool]string{true: "one LRU ClientSessionCache per worker, capacity = hostnames",
			false: "none (every handshake full)"}[s.Resume],
	}
	return result, nil
}

// gogc is the -gogc flag, echoed in the output.
var gogc = 100

func main() {
	var s Settings
	var n int
	var alpn string
	flag.StringVar(&s.Addr, "addr", "", "server address, 127.0.0.1:PORT (loopback IP literals only)")
	flag.StringVar(&s.CAFile, "ca", "", "PEM file of the CA the server certificates must chain to")
	flag.StringVar(&s.HostnamesFile, "hostnames", "", "file of SNI hostnames, one a line")
	flag.StringVar(&s.Pattern, "pattern", "", "SNI hostnames from a pattern with one integer verb, e.g. h%04d.bench.test (with -n)")
	flag.IntVar(&n, "n", 0, "with -pattern: hostnames 1..N")
	flag.StringVar(&s.Order, "order", "random", "random: each connection's hostname drawn uniformly; sequential: in list order, cycling")
	flag.Int64Var(&s.Seed, "seed", 0, "random seed (0: from the clock; printed)")
	flag.StringVar(&s.TLSVersion, "tls", "1.3", "TLS version, 1.3 or 1.2")
	flag.StringVar(&s.Mode, "mode", "handshake", "handshake: close after the handshake; get: one GET (Connection: close), whole response read")
	flag.StringVar(&s.Path, "path", "/", "request path for -mode get")
	flag.IntVar(&s.Concurrency, "concurrency", 1, "connections at a time (one goroutine each)")
	flag.Int64Var(&s.Connections, "connections", 0, "connections to make in all (0: no limit, use -duration)")
	flag.DurationVar(&s.Duration, "duration", 0, "stop starting connections after this long (0: no limit, use -connections)")
	flag.DurationVar(&s.Timeout, "timeout", 10*time.Second, "per connection: connect + handshake + request")
	flag.BoolVar(&s.Resume, "resume", false, "resume sessions (a ClientSessionCache per worker); default: every handshake full")
	flag.DurationVar(&s.TicketWait, "ticket-wait", 100*time.Millisecond, "with -resume, TLS 1.3, -mode handshake: how long to wait for a session ticket")
	flag.StringVar(&alpn, "alpn", "", "ALPN protocols offered, comma-separated, e.g. h2,http/1.1 (default: no ALPN extension)")
	flag.BoolVar(&s.VerifyCache, "verify-cache", true, "skip re-verifying a chain byte-identical to one verified before (the handshake signature and the name are checked every time)")
	flag.IntVar(&s.Sources, "sources", 0, "client k connects from 127.0.0.(2 + k mod N), N <= 250 (0: the kernel's choice, 127.0.0.1)")
	flag.StringVar(&s.Group, "group", "x25519", "key exchange group: x25519 (key share X25519, P-256 also listed) or p256 (only P-256)")
	flag.IntVar(&gogc, "gogc", 400, "Go garbage collector target percentage (debug.SetGCPercent)")
	cpuProfile := flag.String("cpuprofile", "", "write a Go CPU profile of the run to this file (go tool pprof)")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "loadgen: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	debug.SetGCPercent(gogc)
	if alpn != "" {
		s.ALPN = strings.Split(alpn, ",")
	} else {
		s.ALPN = []string{}
	}
	if s.Seed == 0 {
		s.Seed = time.Now().UnixNano()
	}
	if err := loadNames(&s, n); err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		os.Exit(2)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "loadgen: -cpuprofile: %v\n", err)
			os.Exit(2)
		}
		defer f.Close()
	}
	result, err := run(s)
	if *cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		os.Exit(2)
	}
	out := json.NewEncoder(os.Stdout)
	out.SetIndent("", "  ")
	if err := out.Encode(result); err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		os.Exit(1)
	}
}
