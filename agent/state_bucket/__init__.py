"""The Terraform/OpenTofu state bucket: the `StateBucket` port, hosted by Incus or on S3."""
