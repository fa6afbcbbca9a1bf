analyze text/pool_kernel0.tbp
