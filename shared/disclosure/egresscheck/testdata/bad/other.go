package bad

// leak builds the payload type outside the file that releases it.
func leak() Response { return Response{N: 1} }
