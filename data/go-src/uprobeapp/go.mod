module example.com/uprobeapp

go 1.15
