run text/nan_loss.tbp --verify --format json
