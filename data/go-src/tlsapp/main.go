// tlsapp: a TLS server and client, and a net/http HTTP/2 server, in one program.
//
//	tlsapp loop N     call countMe N times, print "ready", wait for stdin to close
//	tlsapp selftest   serve HTTP/2 over TLS on 127.0.0.1 and GET from it once
//
// It is a test input of the Go resolver: built with several toolchains and link flags.
package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io/ioutil"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

//go:noinline
func countMe(n int) int {
	if n%3 == 0 {
		return n * 2
	}
	if n%3 == 1 {
		return n + 7
	}
	return n - 1
}

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

func selftest() error {
	cert := selfSigned()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.Proto)
	})}
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	go srv.ServeTLS(ln, "", "")
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		ForceAttemptHTTP2: true,
	}}
	resp, err := client.Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		return err
	}
	body, _ := ioutil.ReadAll(resp.Body) // not io.ReadAll: Go 1.15 builds this too
	resp.Body.Close()
	fmt.Println(string(body))
	return nil
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == "loop" {
		n, _ := strconv.Atoi(os.Args[2])
		bufio.NewReader(os.Stdin).ReadString('\n') // wait until the tracer is attached
		total := 0
		for i := 0; i < n; i++ {
			total += countMe(i)
		}
		fmt.Println("done", total)
		return
	}
	if len(os.Args) == 2 && os.Args[1] == "selftest" {
		if err := selftest(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	fmt.Fprintln(os.Stderr, "usage: tlsapp loop N | selftest")
	os.Exit(2)
}
