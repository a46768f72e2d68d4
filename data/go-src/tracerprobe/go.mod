module example.com/tracerprobe

go 1.19
