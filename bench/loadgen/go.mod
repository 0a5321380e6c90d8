module jobhost/bench/loadgen

go 1.19
