module example.com/tlsapp

go 1.19
