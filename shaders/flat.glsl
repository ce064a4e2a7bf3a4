#version 330 core
// A constant colour over the mesh in UV space: marks the texels the UV layout covers.

#if defined VERTEX_SHADER

in vec2 in_uv;

void main() {
    gl_Position = vec4(in_uv * 2.0 - 1.0, 0.0, 1.0);
}

#elif defined FRAGMENT_SHADER

out vec4 f_color;

void main() {
    f_color = vec4(1.0);
}

#endif
