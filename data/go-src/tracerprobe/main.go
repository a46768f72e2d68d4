// tracerprobe: a Go program whose TLS calls the tracer follows, printing what user space
// knows about each call (goroutine id, socket fd, *tls.Conn address, byte count) so that
// `tracer verify` and the tracer tests can compare it with what the BPF side read.
//
//	tracerprobe serve      TLS client+server on 127.0.0.1; commands on stdin, one per line:
//	                         write N   the client writes N bytes (the server echoes them)
//	                         read      the client reads the echo
//	                       each prints "<cmd> goid=G fd=F conn=0xADDR n=N"; EOF exits
//	tracerprobe sleep MS   sleep MS milliseconds and exit (a short-lived Go process)
//	tracerprobe fork MS    after 500 ms, fork (no exec): print "child pid=P"; the child
//	                       sleeps MS milliseconds in raw syscalls and exits; the parent waits
//
// It is a test input of the tracer: built by tests/go_builds.py with real toolchains.
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
	"math/big"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// goid parses the current goroutine's id from its stack header ("goroutine 18 [running]:").
func goid() int64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	f := bytes.Fields(buf)
	if len(f) < 2 {
		return -1
	}
	n, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil {
		return -1
	}
	return n
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

func sysfd(c *net.TCPConn) int {
	raw, err := c.SyscallConn()
	if err != nil {
		panic(err)
	}
	fd := -1
	raw.Control(func(f uintptr) { fd = int(f) })
	return fd
}

func serve() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{selfSigned()}}
	srv := tls.NewListener(ln, cfg)
	go func() {
		for {
			c, err := srv.Accept()
			if err != nil {
				return
			}
			go io.Copy(c, c) // echo, decrypted and encrypted again by the server's tls.Conn
		}
	}()
	tcp, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		panic(err)
	}
	client := tls.Client(tcp, &tls.Config{InsecureSkipVerify: true})
	if err := client.Handshake(); err != nil {
		panic(err)
	}
	fd := sysfd(tcp.(*net.TCPConn))
	fmt.Printf("ready pid=%d fd=%d conn=%p\n", os.Getpid(), fd, client)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		words := strings.Fields(in.Text())
		if len(words) == 0 {
			continue
		}
		done := make(chan string)
		switch words[0] {
		case "write":
			n, _ := strconv.Atoi(words[1])
			go func() {
				g := goid()
				k, err := client.Write(bytes.Repeat([]byte{'x'}, n))
				if err != nil {
					panic(err)
				}
				done <- fmt.Sprintf("write goid=%d fd=%d conn=%p n=%d", g, fd, client, k)
			}()
		case "read":
			go func() {
				g := goid()
				buf := make([]byte, 65536)
				k, err := client.Read(buf)
				if err != nil {
					panic(err)
				}
				done <- fmt.Sprintf("read goid=%d fd=%d conn=%p n=%d", g, fd, client, k)
			}()
		default:
			fmt.Fprintln(os.Stderr, "unknown command", words[0])
			os.Exit(2)
		}
		fmt.Println(<-done)
	}
}

// forkSleep forks without exec, as a Go program rarely does: the child (a copy of this
// process with one thread) only makes raw system calls, then exits.
func forkSleep(ms int) {
	ts := syscall.Timespec{Sec: int64(ms / 1000), Nsec: int64(ms%1000) * 1e6}
	time.Sleep(500 * time.Millisecond) // a tracer with --go-delay 0 follows this process first
	pid, _, errno := syscall.RawSyscall(syscall.SYS_CLONE, uintptr(syscall.SIGCHLD), 0, 0)
	if errno != 0 {
		panic(errno)
	}
	if pid == 0 {
		syscall.RawSyscall(syscall.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)), 0, 0)
		syscall.RawSyscall(syscall.SYS_EXIT_GROUP, 0, 0, 0)
	}
	fmt.Printf("child pid=%d\n", pid)
	var status syscall.WaitStatus
	syscall.Wait4(int(pid), &status, 0, nil)
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == "serve" {
		serve()
		return
	}
	if len(os.Args) == 3 && os.Args[1] == "sleep" {
		ms, _ := strconv.Atoi(os.Args[2])
		time.Sleep(time.Duration(ms) * time.Millisecond)
		return
	}
	if len(os.Args) == 3 && os.Args[1] == "fork" {
		ms, _ := strconv.Atoi(os.Args[2])
		forkSleep(ms)
		return
	}
	fmt.Fprintln(os.Stderr, "usage: tracerprobe serve | sleep MS | fork MS")
	os.Exit(2)
}
