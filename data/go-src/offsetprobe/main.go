// offsetprobe: links every struct whose member offsets the tracer reads, so that the DWARF
// of a build holds their layouts.  scripts/gen_go_offsets.py builds it with each toolchain.
// It is never run for its behaviour; main only keeps the code reachable.
package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Println("offsetprobe: build-only program")
		return
	}
	ln, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		panic(err)
	}
	// net/http's bundled HTTP/2, server and client side.
	srv := &http.Server{Handler: http.NotFoundHandler()}
	go srv.ServeTLS(ln, os.Args[2], os.Args[2])
	client := &http.Client{Transport: &http.Transport{ForceAttemptHTTP2: true,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	client.Get("https://" + ln.Addr().String())
	// golang.org/x/net/http2, server and client side.
	conn, _ := net.Dial("tcp", ln.Addr().String())
	go (&http2.Server{}).ServeConn(conn, &http2.ServeConnOpts{Handler: http.NotFoundHandler()})
	tr := &http2.Transport{AllowHTTP: true}
	cc, err := tr.NewClientConn(conn)
	if err == nil {
		req, _ := http.NewRequest("GET", "http://x/", nil)
		cc.RoundTrip(req)
	}
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = nil
	fr.ReadFrame()
	// gRPC server and client over TLS.
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{})))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go gs.Serve(ln)
	gc, err := grpc.DialContext(context.Background(), ln.Addr().String(),
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})))
	if err == nil {
		healthpb.NewHealthClient(gc).Check(context.Background(), &healthpb.HealthCheckRequest{})
	}
}
