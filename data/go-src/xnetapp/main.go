// xnetapp: an HTTP/2 (h2c, cleartext) server and client built on golang.org/x/net/http2.
//
//	xnetapp selftest   serve on 127.0.0.1, send one request, print the answer
//
// Built in GOPATH mode against Debian's golang-golang-x-net-dev sources.
package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

func main() {
	if len(os.Args) != 2 || os.Args[1] != "selftest" {
		fmt.Fprintln(os.Stderr, "usage: xnetapp selftest")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.Proto)
	})
	go http.Serve(ln, h2c.NewHandler(handler, &http2.Server{}))
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLS: func(network, addr string, _ *tls.Config) (net.Conn, error) {
			return net.Dial(network, addr)
		},
	}
	resp, err := (&http.Client{Transport: tr}).Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(string(body))
}
