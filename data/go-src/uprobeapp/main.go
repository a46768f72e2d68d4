// uprobeapp: a TLS client writing to a TLS server on 127.0.0.1, N times, printing what
// each call was given and returned, so that uprobes placed by `resolver expr --apply`
// (an entry probe and one probe per RET of crypto/tls.(*Conn).Write) can be checked
// against it: one entry and one return event per call, the same lengths, the program
// never crashing.
//
//	uprobeapp N    handshake, print "ready pid=P fd=F", wait for a line on stdin, then
//	               call client.Write N times (lengths 1..4096, varying), printing
//	               "write i=I len=L n=N" for each, then "done calls=N bytes=B"
//
// Only the client calls (*Conn).Write: the server reads into io.Discard.
// It is a test input of the resolver: built by tests/support/go_builds.py.
package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"io/ioutil"
	"math/big"
	"net"
	"os"
	"strconv"
	"time"
)

func selfSigned() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func sysfd(c *net.TCPConn) int {
	raw, err := c.SyscallConn()
	if err != nil {
		panic(err)
	}
	fd := -1
	raw.Control(func(f uintptr) { fd = int(f) })
	return fd
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: uprobeapp N")
		os.Exit(2)
	}
	n, err := strconv.Atoi(os.Args[1])
	if err != nil {
		panic(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{selfSigned()}})
	served := make(chan int64)
	go func() {
		c, err := srv.Accept()
		if err != nil {
			panic(err)
		}
		k, _ := io.Copy(ioutil.Discard, c) // not io.Discard: Go 1.15 builds this too
		served <- k
	}()
	tcp, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		panic(err)
	}
	client := tls.Client(tcp, &tls.Config{InsecureSkipVerify: true})
	if err := client.Handshake(); err != nil {
		panic(err)
	}
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "ready pid=%d fd=%d\n", os.Getpid(), sysfd(tcp.(*net.TCPConn)))
	out.Flush()
	bufio.NewReader(os.Stdin).ReadString('\n') // wait until the probes are in place
	buf := bytes.Repeat([]byte{'u'}, 4096)
	total := 0
	for i := 0; i < n; i++ {
		size := 1 + (i*997)%4096
		k, err := client.Write(buf[:size])
		if err != nil {
			panic(err)
		}
		total += k
		fmt.Fprintf(out, "write i=%d len=%d n=%d\n", i, size, k)
	}
	client.Close()
	got := <-served
	fmt.Fprintf(out, "done calls=%d bytes=%d served=%d\n", n, total, got)
	out.Flush()
}
