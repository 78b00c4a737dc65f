"""Docker as a source (sources layer): volumes, containers and images captured and restored
through the Engine API.

The parts: `engine` (the connection, errors, image facts), `volume` (`VolumeSource`),
`container` (`ContainerSource`) with `containerinfo` (a container's mounts and description
from its inspect data), `images` (`ImagesSource`), `mounts` (helper containers that read and
write a volume or a bind mount), `tarreader` (the engine's tar streams → artifact trees),
`tarwriter` (artifact trees → tar streams for the engine), `quiesce` (stopping or pausing
containers, by level in parallel, with a guaranteed start afterwards), `exec` (running tools
inside a container: `ContainerRunner`).
"""
