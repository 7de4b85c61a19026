package proxy

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/authz-proxy/authz-proxy/internal/metrics"
)

// Conns bounds the client connections of the proxy's listener: at most
// max open at once, at most perClient of one client (its source address;
// its verified mTLS identity once the handshake is done). A client's idle
// keep-alive connections are closed first: when it is at its share and
// opens another, when the listener is full and another client connects,
// and as they go idle while the listener is near full (nine tenths). Past
// that, a new connection of a client at its share waits (for clientWait
// at most) for one of that client's to close, and any client waits in the
// listen backlog for a free slot. Use Listener as the
// server's listener and ConnState as its ConnState hook.
type Conns struct {
	max, perClient int
	slots          chan struct{}

	mu    sync.Mutex
	conns map[*conn]struct{}
	// of counts the connections of each client, by address and by
	// identity.
	of map[string]int

	refusedClient, shed atomic.Uint64
	// freed is closed, and replaced, whenever a connection closes.
	freed chan struct{}
}

// NewConns bounds connections to max in all and perClient per client.
func NewConns(max, perClient int) *Conns {
	return &Conns{max: max, perClient: perClient, slots: make(chan struct{}, max), conns: map[*conn]struct{}{}, of: map[string]int{}, freed: make(chan struct{})}
}

// conn is one client connection, counted until it closes.
type conn struct {
	net.Conn
	c        *Conns
	addr     string // the source address (as clientKey names it)
	identity string // "cert:<name>" once known
	idle     bool   // between requests; under c.mu
	seq      uint64 // accept order, to close the oldest idle first
	once     sync.Once
}

func (cn *conn) Close() error {
	err := cn.Conn.Close()
	cn.once.Do(func() {
		c := cn.c
		c.mu.Lock()
		delete(c.conns, cn)
		c.release(cn.addr)
		if cn.identity != "" {
			c.release(cn.identity)
		}
		c.notify()
		c.mu.Unlock()
		<-c.slots
	})
	return err
}

// closeUncounted closes a connection that was never admitted: it holds a
// slot of the listener, not of its client.
func (cn *conn) closeUncounted() error {
	err := cn.Conn.Close()
	cn.once.Do(func() { <-cn.c.slots })
	return err
}

// notify wakes the connections waiting for a client's slot; c.mu is held.
func (c *Conns) notify() {
	close(c.freed)
	c.freed = make(chan struct{})
}

// release counts one connection of key out; c.mu is held.
func (c *Conns) release(key string) {
	if c.of[key]--; c.of[key] <= 0 {
		delete(c.of, key)
	}
}

// Listener wraps ln with the bounds.
func (c *Conns) Listener(ln net.Listener) net.Listener {
	return &listener{Listener: ln, c: c, ready: make(chan net.Conn), done: make(chan struct{})}
}

// clientWait is how long a new connection of a client at its share waits
// for one of that client's to close before it is closed: a client that
// holds connections it does not use (they are let go at sendTimeout)
// delays its own next pull, never another client's.
const clientWait = 15 * time.Second

// listener accepts in a goroutine of its own, so that a connection of a
// client at its share can wait for that client's share without holding
// up the others.
type listener struct {
	net.Listener
	c     *Conns
	seq   atomic.Uint64
	once  sync.Once
	ready chan net.Conn
	done  chan struct{}
	// err ends the listener: errc is closed once it is set.
	errMu sync.Mutex
	err   error
	errc  chan struct{}
}

func (l *listener) Accept() (net.Conn, error) {
	l.once.Do(func() {
		l.errc = make(chan struct{})
		go l.loop()
	})
	select {
	case cn := <-l.ready:
		return cn, nil
	case <-l.errc:
		l.errMu.Lock()
		defer l.errMu.Unlock()
		return nil, l.err
	}
}

func (l *listener) Close() error {
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	return l.Listener.Close()
}

// loop accepts connections within the bounds and hands them to Accept.
func (l *listener) loop() {
	c := l.c
	for {
		select {
		case c.slots <- struct{}{}:
		default:
			// Full: another client's idle connection makes room, or
			// the new one waits for a slot.
			c.closeIdle("")
			select {
			case c.slots <- struct{}{}:
			case <-l.done:
				// Closed while full: Accept must learn it too, or a
				// server's Shutdown waits for it forever.
				l.end(net.ErrClosed)
				return
			}
		}
		raw, err := l.Listener.Accept()
		if err != nil {
			<-c.slots
			if errors.Is(err, net.ErrClosed) {
				l.end(err)
				return
			}
			// Out of file descriptors, a connection reset before it
			// was accepted: try again shortly, as net/http does.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		cn := &conn{Conn: raw, c: c, addr: hostOf(raw.RemoteAddr().String()), seq: l.seq.Add(1)}
		if c.admit(cn, cn.addr) {
			l.hand(cn)
			continue
		}
		go l.park(cn)
	}
}

// end makes Accept return err from now on.
func (l *listener) end(err error) {
	l.errMu.Lock()
	l.err = err
	l.errMu.Unlock()
	close(l.errc)
}

// hand gives cn to Accept, or closes it once the listener is closed.
func (l *listener) hand(cn *conn) {
	select {
	case l.ready <- cn:
	case <-l.done:
		_ = cn.closeUncounted()
	}
}

// park waits for a slot of cn's client for at most clientWait, then
// hands cn on or closes it.
func (l *listener) park(cn *conn) {
	c := l.c
	deadline := time.NewTimer(clientWait)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		freed := c.freed
		c.mu.Unlock()
		if c.admit(cn, cn.addr) {
			l.hand(cn)
			return
		}
		select {
		case <-freed:
		case <-deadline.C:
			c.refusedClient.Add(1)
			_ = cn.closeUncounted()
			return
		case <-l.done:
			_ = cn.closeUncounted()
			return
		}
	}
}

// admit counts cn in as a connection of key, closing an idle one of the
// same client to stay within its share; false when it is past its share
// with none idle.
func (c *Conns) admit(cn *conn, key string) bool {
	c.mu.Lock()
	if c.of[key] >= c.perClient {
		c.mu.Unlock()
		c.closeIdle(key)
		c.mu.Lock()
	}
	defer c.mu.Unlock()
	if c.of[key] >= c.perClient {
		return false
	}
	c.of[key]++
	if key == cn.addr {
		c.conns[cn] = struct{}{}
	}
	return true
}

// closeIdle closes the oldest idle connection of client key ("": of any
// client), and reports whether there was one.
func (c *Conns) closeIdle(key string) bool {
	c.mu.Lock()
	var oldest *conn
	for cn := range c.conns {
		if cn.idle && (key == "" || cn.addr == key || cn.identity == key) && (oldest == nil || cn.seq < oldest.seq) {
			oldest = cn
		}
	}
	c.mu.Unlock()
	if oldest == nil {
		return false
	}
	c.shed.Add(1)
	_ = oldest.Close()
	return true
}

// ConnState is the server's hook: it tracks which connections are idle,
// closes those going idle while the listener is near full, and counts a
// TLS connection toward its verified identity's share once the handshake
// is done (closing it when that share is full).
func (c *Conns) ConnState(nc net.Conn, state http.ConnState) {
	cn := connOf(nc)
	if cn == nil {
		return
	}
	switch state {
	case http.StateActive:
		c.mu.Lock()
		cn.idle = false
		c.mu.Unlock()
		if cn.identity == "" {
			if id := identityOf(nc); id != "" {
				cn.identity = id
				if !c.admit(cn, id) {
					cn.identity = ""
					c.refusedClient.Add(1)
					_ = cn.Close()
				}
			}
		}
	case http.StateIdle:
		c.mu.Lock()
		cn.idle = true
		pressed := len(c.conns) >= c.max-c.max/10
		c.mu.Unlock()
		if pressed {
			c.shed.Add(1)
			_ = cn.Close()
		}
	}
}

// connOf finds the counted connection under nc (a *tls.Conn over one).
func connOf(nc net.Conn) *conn {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	cn, _ := nc.(*conn)
	return cn
}

// identityOf is the verified client certificate's holder of a TLS
// connection whose handshake is done, "" otherwise.
func identityOf(nc net.Conn) string {
	tc, ok := nc.(*tls.Conn)
	if !ok {
		return ""
	}
	st := tc.ConnectionState()
	if !st.HandshakeComplete || len(st.VerifiedChains) == 0 {
		return ""
	}
	if name := certificateName(st.VerifiedChains[0][0]); name != "" {
		return "cert:" + name
	}
	return ""
}

// Shares are the connection bounds as metrics read them.
func (c *Conns) Shares() []metrics.Share {
	c.mu.Lock()
	defer c.mu.Unlock()
	most, saturated := 0, 0
	for _, n := range c.of {
		most = max(most, n)
		if n >= c.perClient {
			saturated++
		}
	}
	return []metrics.Share{
		{Bound: "connections", Party: "all", InUse: float64(len(c.conns)), Limit: float64(c.max), Refused: c.shed.Load()},
		{Bound: "connections", Party: "client", InUse: float64(most), Limit: float64(c.perClient), Refused: c.refusedClient.Load(), Saturated: saturated},
	}
}
