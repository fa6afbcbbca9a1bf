bench --modes store-all,fastest
