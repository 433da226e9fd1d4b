"""The task API: the one contract between the engine's side of a container
(the host) and whatever runs it. Over virtio-serial it joins the VM shim on
the host to the guest agent inside a utility VM."""
