"""Self-supervised pretraining building blocks (issue 17): two-view augmentation (`views`),
SimCLR / BYOL losses (`losses`), projection and predictor heads (`heads`), BYOL's momentum
target update (`momentum`) and the kNN monitor (`knn`). Import the submodules directly."""
